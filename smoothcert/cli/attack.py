"""``smoothcert attack``: a thin wrapper over ``smoothcert.attacks.attack_dataset`` and
``smoothcert.attacks.check_certificates``."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from . import main
from ..attacks import FGSM, NORMS, PGD, SmoothedEval, attack_dataset, check_certificates
from ..certification import Selection
from ..runs import check_compatible, load_model, load_model_and_dataset
from .common import resolve_device, user_errors

SANITY_STEPS, SANITY_STEP_SIZE = 200, 0.01


def _given(ctx: click.Context, *names: str) -> list[str]:
    """The options among ``names`` (parameter names) that the user set explicitly."""
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    return [flags[n] for n in names
            if ctx.get_parameter_source(n) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)]


def _refuse(ctx: click.Context, why: str, *names: str) -> None:
    given = _given(ctx, *names)
    if given:
        raise click.UsageError(f"{given[0]} does not apply {why}")


def _positive(value: float | int | None, flag: str, integer: bool = False) -> None:
    if value is not None and not (value >= 1 if integer else (value > 0 and math.isfinite(value))):
        raise click.BadParameter(f"must be {'>= 1' if integer else 'a finite number > 0'}, got {value}",
                                 param_hint=flag)


def _certify_meta(log: Path) -> dict[str, Any]:
    """The ``certify`` settings recorded next to a certify log by ``smoothcert certify``, if any."""
    path = Path(str(log) + ".meta.json")
    try:
        return json.loads(path.read_text()).get("certify", {}) if path.is_file() else {}
    except (json.JSONDecodeError, AttributeError):
        return {}


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--dataset", default=None, help="Dataset name (default: the model's training dataset).")
@click.option("--data-root", default=None, help="Folder with the dataset files (mnist, cifar10, ...).")
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
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
@click.option("--sigma", type=float, default=None, help="Smoothing noise level [default: the model's training sigma].")
@click.option("--num-noise-vec", type=int, default=8, show_default=True, help="Noisy copies per PGD gradient (M).")
@click.option("--N", "n", type=int, default=1000, show_default=True, help="PREDICT samples.")
@click.option("--alpha", type=float, default=0.001, show_default=True, help="PREDICT failure probability.")
@click.option("--sanity", is_flag=True,
              help=f"Gradient-masking check: unbounded PGD, {SANITY_STEPS} steps of {SANITY_STEP_SIZE} in --norm; "
                   "accuracy should fall to about 0.")
@click.option("--check-certificates", "cert_log", type=click.Path(path_type=Path), default=None,
              help="Certify log (TSV) to test: L2 PGD on the smoothed classifier inside each certified radius, then "
                   "PREDICT; exit 1 if violations exceed what alpha allows (binomial test).")
@click.option("--radius-scale", type=float, default=0.99, show_default=True,
              help="--check-certificates: attack within this fraction of each certified radius.")
@click.option("--cert-alpha", type=float, default=None,
              help="--check-certificates: alpha the log was certified with [default: from LOG.meta.json, else 0.001].")
@click.option("--level", type=float, default=0.01, show_default=True,
              help="--check-certificates: significance level of the binomial test.")
@click.option("--skip", type=int, default=1, show_default=True, help="Take every SKIP-th input.")
@click.option("--max", "max_count", type=int, default=-1, show_default=True, help="At most MAX inputs; -1 for all.")
@click.option("--batch", "batch", type=int, default=256, show_default=True,
              help="Rows per forward pass (inputs, or inputs x --num-noise-vec when smoothed; PREDICT's batch).")
@click.option("--seed", type=int, default=None, help="Seed (random starts, noise): reruns and resumes are identical.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="TSV log, one row per input; rerunning with the same file resumes.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
@user_errors
def attack(ctx: click.Context, model: Path, dataset: str | None, data_root: str | None, split: str, attack_name: str,
           norm: str, eps: float, steps: int, step_size: float | None, random_start: bool, source: Path | None,
           smoothed: bool, sigma: float | None, num_noise_vec: int, n: int, alpha: float, sanity: bool,
           cert_log: Path | None, radius_scale: float, cert_alpha: float | None, level: float, skip: int,
           max_count: int, batch: int, seed: int | None, out: Path, device: str | None, quiet: bool) -> None:
    """Empirical robustness of MODEL (run directory or checkpoint) under FGSM or PGD.

    Writes one TSV row per input (idx label predict correct clean_predict delta_norm time; predict
    is the prediction on the adversarial input, -1 = abstain) and prints clean and robust accuracy.
    White-box by default; --source crafts the examples on another model (black-box); --smoothed
    attacks the smoothed classifier; --sanity runs the unbounded-PGD check; --check-certificates
    tests a certify log's certificates (rows: idx label predict correct certified radius eps
    delta_norm violation time).
    """
    norm = norm.lower()
    for flag, v, integer in (("--eps", eps, False), ("--steps", steps, True), ("--step-size", step_size, False),
                             ("--sigma", sigma, False), ("--num-noise-vec", num_noise_vec, True), ("--N", n, True),
                             ("--batch", batch, True)):
        _positive(v, flag, integer)
    for flag, v in (("--alpha", alpha), ("--level", level), ("--cert-alpha", cert_alpha)):
        if v is not None and not 0 < v < 1:
            raise click.BadParameter(f"must be in (0, 1), got {v}", param_hint=flag)
    if not 0 < radius_scale <= 1:
        raise click.BadParameter(f"must be in (0, 1], got {radius_scale}", param_hint="--radius-scale")
    if not out.parent.is_dir():
        raise click.BadParameter(f"folder {str(out.parent)!r} does not exist", param_hint="--out")
    if cert_log is None:
        _refuse(ctx, "without --check-certificates", "radius_scale", "cert_alpha", "level")
    if not smoothed and cert_log is None:
        _refuse(ctx, "without --smoothed", "sigma", "num_noise_vec", "n", "alpha")
    if cert_log is not None:
        _refuse(ctx, "with --check-certificates (each input is attacked with L2 PGD at its certified radius)",
                "attack_name", "norm", "eps", "random_start", "source", "sanity")
    elif sanity:
        _refuse(ctx, f"with --sanity (PGD, {SANITY_STEPS} steps of {SANITY_STEP_SIZE}, no bound)",
                "attack_name", "eps", "steps", "step_size", "random_start")
    elif attack_name == "fgsm":
        _refuse(ctx, "to FGSM (one step of size --eps)", "steps", "step_size", "random_start")

    dev = resolve_device(device)
    net, config, ds = load_model_and_dataset(model, dataset, data_root, split, dev)
    crafter = None
    if source is not None:
        crafter, source_config = load_model(source, dev)
        try:
            check_compatible(source_config, ds)
        except ValueError as e:
            raise click.BadParameter(f"source model is for another dataset: {e}", param_hint="--source") from None
    if smoothed or cert_log is not None:
        recorded = _certify_meta(cert_log) if cert_log is not None else {}
        if sigma is not None and recorded.get("sigma") not in (None, sigma):
            raise click.BadParameter(f"the certify log was made with sigma {recorded['sigma']}, not {sigma}",
                                     param_hint="--sigma")
        sigma = sigma or recorded.get("sigma") or config.get("sigma")
        if not sigma:
            raise click.BadParameter("the model records no training sigma: give --sigma", param_hint="--sigma")
    selection = Selection(skip, max_count)
    meta = {"model": str(model), "config": config, "dataset": ds.name, "split": split,
            "source": str(source) if source is not None else None}
    progress = not quiet and sys.stderr.isatty()

    if cert_log is not None:
        cert_alpha = cert_alpha or recorded.get("alpha") or 0.001
        result = check_certificates(net, ds, cert_log, sigma, out, cert_alpha=cert_alpha, n=n, alpha=alpha,
                                    num_noise_vec=num_noise_vec, steps=steps, step_size=step_size,
                                    radius_scale=radius_scale, level=level, batch_size=batch, selection=selection,
                                    seed=seed, meta=meta, progress=progress)
        verdict = "SIGNIFICANT: certificates broken beyond alpha" if result.significant else "ok"
        click.echo(f"{result.checked} certificates checked at {radius_scale:g} x radius: {result.violations} "
                   f"violations (rate {result.violation_rate:.4f}, allowed <= {result.null_rate:.4g}), "
                   f"{result.abstained} abstentions; binomial p-value {result.p_value:.3g}: {verdict}")
        if result.significant:
            ctx.exit(1)
        return

    if sanity:
        atk = PGD(math.inf, SANITY_STEPS, SANITY_STEP_SIZE, norm)
    elif attack_name == "fgsm":
        atk = FGSM(eps, norm)
    else:
        atk = PGD(eps, steps, step_size, norm, random_start=random_start)
    spec = SmoothedEval(sigma, num_noise_vec, n, alpha) if smoothed else None
    summary = attack_dataset(net, ds, atk, out, source=crafter, smoothed=spec, batch_size=batch,
                             selection=selection, seed=seed, meta=meta, progress=progress)
    what = "unbounded pgd (sanity)" if sanity else \
        " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                 for k, v in atk.config().items() if k != "random_start" or v)
    click.echo(f"{summary.count} inputs, {what}{' black-box' if source else ''}"
               f"{' smoothed' if smoothed else ''}: clean accuracy {summary.clean_accuracy:.4f}, "
               f"robust accuracy {summary.robust_accuracy:.4f}")
    if sanity and summary.robust_accuracy > 0.05:
        click.echo(f"warning: accuracy under unbounded PGD is {summary.robust_accuracy:.4f}, not about 0: "
                   "the gradients may be masked", err=True)
