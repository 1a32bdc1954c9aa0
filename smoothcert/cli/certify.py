"""``smoothcert certify`` and ``smoothcert predict``: thin wrappers over
``smoothcert.certification.certify_dataset`` / ``predict_dataset``."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from . import main
from ..validation import check_alpha, check_float, check_int, check_output, check_sigma
from .names import BOUNDS, CERT_NORMS as NORMS
from .common import (amp_dtype, amp_option, channels_last_option, data_options, device_option,
                     max_option, model_source_options, noise_option, quiet_option, resolve_device, seed_option,
                     user_errors)

if TYPE_CHECKING:  # the library (torch) is imported by the commands' work, not for --help
    from ..runs import Selection
    from ..smoothing import Smooth
    from .common import ModelSource


class _BatchType(click.ParamType):
    """--batch: an integer >= 1 or 'auto'."""

    name = "INTEGER|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if value == "auto" or isinstance(value, int):
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"must be an integer or 'auto', got {value!r}", param, ctx)


def _noise_block(batch: int | str) -> int:
    """The batch_size handed to the library: --batch auto draws noise as --batch 1000 does (the
    memory-derived cap on the forward chunk is Smooth's ``max_batch="auto"``)."""
    return 1000 if batch == "auto" else int(batch)


def _smoothing_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        model_source_options,
        data_options,
        click.option("--sigma", type=float, default=None,
                     help="Noise level (pixel scale, [0,1] data). Default: the sigma the model was trained with."),
        noise_option(),
        click.option("--denoiser", type=click.Path(path_type=Path), default=None,
                     help="Certify MODEL behind this denoiser: a run of --method denoiser or ddpm (one-shot at "
                          "--sigma), or a diffusers pipeline folder. Default --sigma: the denoiser's."),
        click.option("--batch", "batch", type=_BatchType(), default="1000", show_default=True,
                     help="Rows (noisy samples) per forward pass, an upper bound: the fastest chunk up to it is "
                          "probed; or 'auto': bounded by free memory (noise then drawn as with --batch 1000)."),
        click.option("--skip", type=int, default=1, show_default=True, help="Take every SKIP-th input of the split."),
        max_option("inputs (counts selected inputs, not dataset indices as the original code did)"),
        click.option("--shard", default=None, metavar="I/K|slurm",
                     help="Only the I-th of K disjoint slices of the selected inputs (1 <= I <= K), into its own log "
                          "(e.g. one Slurm array task each; `slurm` reads SLURM_ARRAY_TASK_ID and the array's "
                          "size); the K logs together hold the rows of the unsharded run: `smoothcert merge`."),
        click.option("--out", type=click.Path(path_type=Path), required=True,
                     help="TSV log; rerunning with the same file resumes where it stopped."),
        seed_option("the noise"),
        click.option("--pack", type=int, default=1, show_default=True,
                     help="Inputs per call: their samples share forward batches (for small models on big devices)."),
        device_option(),
        amp_option(),
        channels_last_option(),
        click.option("--compile", "compile_model", is_flag=True, help="Wrap the model in torch.compile."),
        quiet_option(),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def selection(skip: int, max_count: int | None, shard: str | None = None) -> Selection:
    """The inputs ``--skip``/``--max`` select (``--max`` omitted: all), with ``--shard`` only its shard."""
    from ..runs import Selection
    from ..shards import parse_shard

    return Selection(skip, -1 if max_count is None else max_count, parse_shard(shard))


def _prepare(model: ModelSource, dataset: str | None, data_root: str | None, split: str, sigma: float | None,
             noise: str | None, alpha: float, batch: int | str, device: str | None, amp: str, channels_last: bool,
             compile_model: bool, out: Path, denoiser: Path | None = None) -> tuple[Smooth, Any]:
    """Check the arguments (before any work), load the model and data, build the smoothed classifier
    (with --noise, default the noise the model was trained with; an unknown noise is refused by
    ``Smooth``, before any file is written)."""
    from ..noise import config_noise
    from ..smoothing import Smooth

    check_alpha(alpha)
    if batch != "auto":
        check_int("batch_size", batch, 1)
    check_output("out", out)
    if sigma is not None:
        check_sigma(sigma, positive=True)
    dev = resolve_device(device)
    net, config, ds = model.load(dataset, data_root, split, dev)  # a run directory, a checkpoint, or --model
    if denoiser is not None:  # denoised smoothing: MODEL behind the denoiser (smoothcert.denoisers.loading)
        from ..denoisers.loading import through_denoiser

        net, sigma = through_denoiser(net, config, denoiser, sigma, dev)
    if sigma is None:
        sigma = config.get("sigma")
        if not sigma:
            raise click.BadParameter("the model records no training sigma: give --sigma", param_hint="--sigma")
    smooth = Smooth(net, int(config["num_classes"]), sigma, noise or config_noise(config),
                    amp_dtype=amp_dtype(amp, dev), channels_last=channels_last, compile=compile_model,
                    max_batch="auto" if batch == "auto" else None)
    return smooth, ds  # the library records the model, its config and the settings in OUT.meta.json


_alpha_option = click.option("--alpha", type=float, default=0.001, show_default=True, help="Failure probability.")


@main.command()
@click.option("--N0", "n0", type=int, default=100, show_default=True, help="Selection samples.")
@click.option("--N", "n", type=int, default=100_000, show_default=True,
              help="Estimation samples (with --sequential: the most an input may use, n_max).")
@_alpha_option
@_smoothing_options
@click.option("--norm", default=None,
              help=f"Certified norm: {', '.join(NORMS)} (those the noise certifies). Default: the noise's own "
                   "(gaussian l2, laplace and uniform l1).")
@click.option("--bound", default="one-sided", show_default=True,
              help=f"{' or '.join(BOUNDS)}: two-sided also bounds the runner-up class from above (alpha split "
                   "between the two bounds).")
@click.option("--sequential", is_flag=True,
              help="Stop drawing estimation samples once the certificate cannot improve within --N "
                   "(anytime-valid bound, same guarantee); the log gets a trailing column n_used.")
@click.option("--radii", "radii_spec", default=None,
              help="With --sequential: certify the largest radius of this grid (e.g. 0:2.5:0.25 or 0,0.5,1); "
                   "the logged radius is that grid level. Default: the radius itself.")
@click.option("--tol", type=float, default=None,
              help="With --sequential and no --radii: stop once the samples left cannot raise the radius by "
                   "more than TOL.  [default: 0.01 sigma]")
@user_errors
def certify(model: ModelSource, dataset: str | None, data_root: str | None, split: str, sigma: float | None,
            noise: str | None, denoiser: Path | None, alpha: float, batch: int | str, skip: int,
            max_count: int | None, shard: str | None, out: Path, seed: int | None, pack: int, device: str | None,
            amp: str, channels_last: bool, compile_model: bool,
            quiet: bool, n0: int, n: int, norm: str | None, bound: str, sequential: bool, radii_spec: str | None,
            tol: float | None) -> None:
    """Certify the smoothed classifier on a dataset split (CERTIFY of Cohen et al., 2019).

    MODEL is a run directory written by `smoothcert train` or a checkpoint file (the reference
    code's cifar_resnet20/110 checkpoints work too), or leave it out and give any model with
    --model (and --dataset). Writes one TSV line per input:
    idx label predict radius correct time (predict -1 = abstain, radius in pixel units of the
    --norm norm), and with --sequential one more column n_used (estimation samples drawn).
    """
    from ..analysis import parse_radii
    from ..certification import certify_dataset, run_summary
    from ..sequential import check_radii

    check_int("n0", n0, 1)
    check_int("n", n, 1)
    chosen = selection(skip, max_count, shard)  # a bad --shard before anything is loaded
    radii = None
    for flag, given in (("--radii", radii_spec is not None), ("--tol", tol is not None)):
        if given and not sequential:
            raise click.BadParameter("needs --sequential", param_hint=flag)
    if radii_spec is not None:
        try:
            radii = check_radii(parse_radii(radii_spec))
        except ValueError as e:
            raise click.BadParameter(str(e).splitlines()[0], param_hint="--radii") from None
    if tol is not None:
        check_float("tol", tol, 0.0, lo_open=True)
    smooth, ds = _prepare(model, dataset, data_root, split, sigma, noise, alpha, batch, device, amp, channels_last,
                          compile_model, out, denoiser)
    norm, bound = smooth.check_options(norm, bound)  # --norm/--bound for this noise, before the log is created
    report = certify_dataset(smooth, ds, out, n0=n0, n=n, alpha=alpha, batch_size=_noise_block(batch),
                             selection=chosen, seed=seed, pack=pack,
                             progress=not quiet, norm=norm, bound=bound,
                             sequential=sequential, radii=radii, tol=tol)
    if not quiet and report.rank == 0:
        click.echo(run_summary(report))


@main.command()
@click.option("--N", "n", type=int, default=100_000, show_default=True, help="Monte Carlo samples.")
@_alpha_option
@_smoothing_options
@user_errors
def predict(model: ModelSource, dataset: str | None, data_root: str | None, split: str, sigma: float | None,
            noise: str | None, denoiser: Path | None, alpha: float, batch: int | str, skip: int,
            max_count: int | None, shard: str | None, out: Path, seed: int | None, pack: int, device: str | None,
            amp: str, channels_last: bool, compile_model: bool,
            quiet: bool, n: int) -> None:
    """Predict with the smoothed classifier on a dataset split (PREDICT of Cohen et al., 2019).

    MODEL: as for certify (a run directory or checkpoint; or --model).
    Writes one TSV line per input: idx label predict correct time (predict -1 = abstain).
    """
    from ..certification import predict_dataset, run_summary

    check_int("n", n, 1)
    chosen = selection(skip, max_count, shard)
    smooth, ds = _prepare(model, dataset, data_root, split, sigma, noise, alpha, batch, device, amp, channels_last,
                          compile_model, out, denoiser)
    report = predict_dataset(smooth, ds, out, n=n, alpha=alpha, batch_size=_noise_block(batch),
                             selection=chosen, seed=seed, pack=pack,
                             progress=not quiet)
    if not quiet and report.rank == 0:
        click.echo(run_summary(report))
