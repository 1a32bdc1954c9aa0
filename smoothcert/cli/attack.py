"""``smoothcert attack`` and ``smoothcert check-certificates``: thin wrappers over
``smoothcert.attacks.attack_dataset`` and ``smoothcert.attacks.check_certificates``."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import click

from . import main
from .names import ATTACK_NORMS as NORMS, NOISES
from ..validation import ArgumentError, check_alpha, check_float, check_int, check_output, check_sigma
from .certify import selection
from .common import (ModelSource, batch_option, data_options, device_option, given, max_option,
                     model_source_options, noise_option, quiet_option, resolve_device, seed_option, user_errors)

SANITY_STEPS, SANITY_STEP_SIZE = 200, 0.01


def _refuse(ctx: click.Context, why: str, *names: str) -> None:
    """UsageError naming the first option among ``names`` that the user set: it does not apply."""
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    for name in names:
        if given(ctx, name):
            raise click.UsageError(f"{flags[name]} does not apply {why}")


def _certify_meta(log: Path) -> dict[str, Any]:
    """The ``certify`` settings recorded next to a certify log by ``smoothcert certify``, if any."""
    path = Path(str(log) + ".meta.json")
    try:
        return json.loads(path.read_text()).get("certify", {}) if path.is_file() else {}
    except (json.JSONDecodeError, AttributeError):
        return {}


def _smoothed_options(sigma_default: str) -> list[Callable[..., Any]]:
    return [
        click.option("--sigma", type=float, default=None, help=f"Smoothing noise level [default: {sigma_default}]."),
        click.option("--num-noise-vec", type=int, default=8, show_default=True,
                     help="Noisy copies per PGD gradient (M)."),
        click.option("--N", "n", type=int, default=1000, show_default=True, help="PREDICT samples."),
        click.option("--alpha", type=float, default=0.001, show_default=True, help="PREDICT failure probability."),
        click.option("--predict-batch", type=int, default=None,
                     help="PREDICT's noise block: samples drawn per block from each batch's seeded generator (it "
                          "changes the draws, not their distribution; also the bound of PREDICT's forward passes). "
                          "[default: --batch]"),
    ]


def _check_options() -> list[Callable[..., Any]]:
    return [
        click.option("--radius-scale", type=float, default=0.99, show_default=True,
                     help="Attack within this fraction of each certified radius."),
        click.option("--cert-alpha", type=float, default=None,
                     help="Alpha the log was certified with [default: from LOG.meta.json, else 0.001]."),
        click.option("--level", type=float, default=0.01, show_default=True,
                     help="Significance level of the binomial test."),
    ]


def _common_tail() -> list[Callable[..., Any]]:
    return [
        click.option("--skip", type=int, default=1, show_default=True, help="Take every SKIP-th input."),
        max_option(),
        batch_option(256, "Rows per forward pass of the attack: inputs, or inputs x --num-noise-vec when "
                          "smoothed; each batch of inputs draws from its own seeded generator. PREDICT's block is "
                          "--predict-batch."),
        seed_option("the random starts and the noise"),
        click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Also write one TSV row per input here (rerunning with the same file resumes); without "
                          "it only the summary is printed."),
        device_option(),
        quiet_option(),
    ]


def _options(opts: list[Callable[..., Any]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(opts):
            fn = opt(fn)
        return fn
    return deco


def _resolve_sigma(sigma: float | None, recorded: dict[str, Any], config: dict[str, Any]) -> float:
    if sigma is not None and recorded.get("sigma") not in (None, sigma):
        raise click.BadParameter(f"the certify log was made with sigma {recorded['sigma']}, not {sigma}",
                                 param_hint="--sigma")
    sigma = sigma or recorded.get("sigma") or config.get("sigma")
    if not sigma:
        raise click.BadParameter("the model records no training sigma: give --sigma", param_hint="--sigma")
    return sigma


def _check_shared(sigma: float | None, num_noise_vec: int, n: int, alpha: float, steps: int,
                  step_size: float | None, batch: int, out: Path | None, predict_batch: int | None = None) -> None:
    """The checks of the options attack and check-certificates share, before anything is loaded."""
    if sigma is not None:
        check_sigma(sigma, positive=True)
    check_int("num_noise_vec", num_noise_vec, 1)
    check_int("n", n, 1)
    check_alpha(alpha)
    check_int("steps", steps, 1)
    if step_size is not None:
        check_float("step_size", step_size, 0.0, lo_open=True)
    check_int("batch_size", batch, 1)
    if predict_batch is not None:
        check_int("predict_batch", predict_batch, 1)
    if out is not None:
        check_output("out", out)


def _run_check(ctx: click.Context, model: ModelSource, log: Path, dataset: str | None, data_root: str | None, split: str,
               sigma: float | None, num_noise_vec: int, n: int, alpha: float, predict_batch: int | None,
               steps: int, step_size: float | None, radius_scale: float, cert_alpha: float | None, level: float, skip: int, max_count: int | None,
               batch: int, seed: int, out: Path | None, device: str | None, quiet: bool) -> None:
    """check-certificates' work."""
    _check_shared(sigma, num_noise_vec, n, alpha, steps, step_size, batch, out, predict_batch)
    check_float("radius_scale", radius_scale, 0.0, 1.0, lo_open=True)
    if cert_alpha is not None:
        check_float("cert_alpha", cert_alpha, 0.0, 1.0, lo_open=True, hi_open=True)
    check_float("level", level, 0.0, 1.0, lo_open=True, hi_open=True)
    if not log.is_file():
        raise click.BadParameter(f"{str(log)!r} does not exist", param_hint="LOG")
    from ..attacks import check_certificates
    from ..runs import provenance

    net, config, ds = model.load(dataset, data_root, split, resolve_device(device))
    recorded = _certify_meta(log)
    sigma = _resolve_sigma(sigma, recorded, config)
    cert_alpha = cert_alpha or recorded.get("alpha") or 0.001
    meta = {**(provenance(net) or {}), "model": str(model), "config": config, "dataset": ds.name, "split": split,
            "source": None}
    result = check_certificates(net, ds, log, sigma, out, cert_alpha=cert_alpha, n=n, alpha=alpha,
                                num_noise_vec=num_noise_vec, steps=steps, step_size=step_size,
                                radius_scale=radius_scale, level=level, batch_size=batch, predict_batch=predict_batch,
                                selection=selection(skip, max_count), seed=seed, meta=meta,
                                progress=not quiet)
    verdict = "SIGNIFICANT: certificates broken beyond alpha" if result.significant else "ok"
    click.echo(f"{result.checked} certificates checked at {radius_scale:g} x radius: {result.violations} "
               f"violations (rate {result.violation_rate:.4f}, allowed <= {result.null_rate:.4g}), "
               f"{result.abstained} abstentions; binomial p-value {result.p_value:.3g}: {verdict}")
    if result.significant:
        ctx.exit(1)


@main.command("check-certificates")
@click.argument("paths", nargs=-1, required=True, metavar="[MODEL] LOG", type=click.Path(path_type=Path))
@model_source_options(argument=False)
@data_options
@_options(_smoothed_options("the certify log's (LOG.meta.json), else the model's training sigma"))
@click.option("--steps", type=int, default=10, show_default=True, help="PGD steps.")
@click.option("--step-size", type=float, default=None,
              help="PGD step size [default: 2.5 x eps / steps, per input (eps = radius-scale x its radius)].")
@_options(_check_options())
@_options(_common_tail())
@click.pass_context
@user_errors
def check_certificates_cmd(ctx: click.Context, paths: tuple[Path, ...], model: ModelSource, dataset: str | None,
                           data_root: str | None,
                           split: str, sigma: float | None, num_noise_vec: int, n: int, alpha: float,
                           predict_batch: int | None, steps: int,
                           step_size: float | None, radius_scale: float, cert_alpha: float | None, level: float,
                           skip: int, max_count: int | None, batch: int, seed: int, out: Path | None,
                           device: str | None, quiet: bool) -> None:
    """Test the certificates of a certify LOG of MODEL empirically.

    MODEL is a run directory or checkpoint; or leave it out and give any model with --model.

    Each certified input (cA, R) is attacked with L2 PGD on the soft smoothed classifier within
    --radius-scale x R, then classified with PREDICT. A violation is a class other than cA and
    abstain; under sound certificates each input is a violation with probability at most
    cert-alpha + alpha, and the count is tested against that binomial. Exit 1 if the test is significant at --level.
    With --out, rows: idx label predict correct certified radius eps delta_norm violation time.
    """
    if len(paths) > 2:
        raise click.UsageError(f"got {len(paths)} paths; give [MODEL] LOG (MODEL left out with --model)")
    log = paths[-1]
    model = replace(model, path=paths[0] if len(paths) == 2 else None)
    _run_check(ctx, model, log, dataset, data_root, split, sigma, num_noise_vec, n, alpha, predict_batch, steps,
               step_size, radius_scale, cert_alpha, level, skip, max_count, batch, seed, out, device, quiet)


@main.command()
@model_source_options
@data_options
@click.option("--attack", "attack_name", type=click.Choice(["fgsm", "pgd"]), default="pgd", show_default=True)
@click.option("--norm", type=click.Choice(NORMS, case_sensitive=False), default="linf", show_default=True,
              help="Threat model; eps is measured in this norm in [0, 1] pixel units.")
@click.option("--eps", type=float, default=4 / 255, show_default="4/255, ALPS's black-box tables",
              help="Radius of the perturbation ball.")
@click.option("--steps", type=int, default=10, show_default=True, help="PGD steps.")
@click.option("--step-size", type=float, default=None,
              help="PGD step size [default: 2.5*EPS/STEPS, i.e. 1/255 at the defaults as in ALPS's tables].")
@click.option("--random-start", is_flag=True, help="PGD starts at a uniform point of the eps-ball.")
@click.option("--source", type=click.Path(path_type=Path), default=None,
              help="Black-box (transfer): craft the examples on this model, evaluate MODEL.")
@click.option("--smoothed", is_flag=True,
              help="Attack the smoothed classifier: PGD on the soft smoothed classifier (mean softmax over "
                   "--num-noise-vec noisy copies, fresh noise each step), evaluated with PREDICT.")
@_options(_smoothed_options("the model's training sigma"))
@noise_option()
@click.option("--sanity", is_flag=True,
              help=f"Gradient-masking check: unbounded PGD, {SANITY_STEPS} steps of {SANITY_STEP_SIZE} in --norm; "
                   "accuracy should fall to about 0.")
@_options(_common_tail())
@click.pass_context
@user_errors
def attack(ctx: click.Context, model: ModelSource, dataset: str | None, data_root: str | None, split: str, attack_name: str,
           norm: str, eps: float, steps: int, step_size: float | None, random_start: bool, source: Path | None,
           smoothed: bool, sigma: float | None, num_noise_vec: int, n: int, alpha: float, predict_batch: int | None,
           noise: str | None, sanity: bool, skip: int, max_count: int | None, batch: int, seed: int, out: Path | None,
           device: str | None, quiet: bool) -> None:
    """Empirical robustness of MODEL (run directory or checkpoint; or --model) under FGSM or PGD.

    Prints clean and robust accuracy; with --out also writes one TSV row per input (idx label
    predict correct clean_predict delta_norm time; predict is the prediction on the adversarial
    input, -1 = abstain). White-box by default; --source crafts the examples on another model
    (black-box); --smoothed attacks the smoothed classifier (smoothed with the run's noise, or
    --noise); --sanity runs the unbounded-PGD check. Certificates are tested by
    `smoothcert check-certificates`.
    """
    if not smoothed:
        _refuse(ctx, "without --smoothed", "sigma", "num_noise_vec", "n", "alpha", "predict_batch", "noise")
    if sanity:
        _refuse(ctx, f"with --sanity (PGD, {SANITY_STEPS} steps of {SANITY_STEP_SIZE}, no bound)",
                "attack_name", "eps", "steps", "step_size", "random_start")
    elif attack_name == "fgsm":
        _refuse(ctx, "to FGSM (one step of size --eps)", "steps", "step_size", "random_start")
    norm = norm.lower()
    check_float("eps", eps, 0.0, lo_open=True)
    _check_shared(sigma, num_noise_vec, n, alpha, steps, step_size, batch, out, predict_batch)
    if noise is not None and noise.lower() not in NOISES:
        raise ArgumentError("noise", f"noise must be one of {', '.join(NOISES)}, got {noise!r}")

    from ..attacks import FGSM, PGD, SmoothedEval, attack_dataset
    from ..noise import config_noise
    from ..runs import check_compatible, load_model, provenance

    dev = resolve_device(device)
    net, config, ds = model.load(dataset, data_root, split, dev)
    crafter = None
    if source is not None:
        crafter, source_config = load_model(source, dev)
        try:
            check_compatible(source_config, ds)
        except ValueError as e:
            raise click.BadParameter(f"source model is for another dataset: {e}", param_hint="--source") from None
    if smoothed:
        sigma = _resolve_sigma(sigma, {}, config)
        noise = noise or config_noise(config)  # the run's noise unless --noise
    meta = {**(provenance(net) or {}), "model": str(model), "config": config, "dataset": ds.name, "split": split,
            "source": str(source) if source is not None else None}

    if sanity:
        atk = PGD(math.inf, SANITY_STEPS, SANITY_STEP_SIZE, norm)
    elif attack_name == "fgsm":
        atk = FGSM(eps, norm)
    else:
        atk = PGD(eps, steps, step_size, norm, random_start=random_start)
    spec = SmoothedEval(sigma, num_noise_vec, n, alpha, noise) if smoothed else None
    summary = attack_dataset(net, ds, atk, out, source=crafter, smoothed=spec, batch_size=batch,
                             predict_batch=predict_batch, selection=selection(skip, max_count), seed=seed, meta=meta,
                             progress=not quiet)
    what = "unbounded pgd (sanity)" if sanity else \
        " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                 for k, v in atk.config().items() if k != "random_start" or v)
    how = f" smoothed ({spec.noise} sigma={spec.sigma:g})" if spec else ""
    click.echo(f"{summary.count} inputs, {what}{' black-box' if source else ''}{how}: "
               f"clean accuracy {summary.clean_accuracy:.4f}, robust accuracy {summary.robust_accuracy:.4f}")
    if sanity and summary.robust_accuracy > 0.05:
        click.echo(f"warning: accuracy under unbounded PGD is {summary.robust_accuracy:.4f}, not about 0: "
                   "the gradients may be masked", err=True)
