"""``smoothcert certify`` and ``smoothcert predict``: thin wrappers over
``smoothcert.certification.certify_dataset`` / ``predict_dataset``."""
from __future__ import annotations

from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from . import main
from ..validation import check_alpha, check_float, check_int, check_output, check_sigma
from .names import BOUNDS, CERT_NORMS as NORMS, DEFAULT_SEQUENCE, SEQUENCES
from .common import (amp_dtype, amp_option, channels_last_option, data_options, device_option,
                     max_option, model_source_options, noise_option, quiet_option, resolve_device, seed_option,
                     user_errors, warn_deprecated)

if TYPE_CHECKING:  # the library (torch) is imported by the commands' work, not for --help
    from ..runs import Selection
    from ..smoothing import Smooth
    from .common import ModelSource


class _RowsType(click.ParamType):
    """--max-batch (and the deprecated --batch auto): an integer >= 1 or 'auto'."""

    name = "INTEGER|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if value == "auto" or isinstance(value, int):
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"must be an integer or 'auto', got {value!r}", param, ctx)


@dataclass(frozen=True)
class Batching:
    """What --batch and --max-batch ask for, one meaning each: ``block``, the noise block (samples
    are drawn ``block`` at a time from each input's seeded generator, so it is part of what is
    computed: the library's ``batch_size``, recorded as ``batch``); ``max_rows``, a bound on the
    rows of one forward pass (an integer, "auto": half the free memory, or None: ``block``),
    which changes speed and memory only and is not recorded."""

    block: int
    max_rows: int | str | None = None


def _noise_block(batch: Batching) -> int:
    """The batch_size handed to the library: the noise block."""
    return batch.block


def _batching(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Hand the command ``batch`` as one ``Batching`` from --batch and --max-batch (the
    second release's --batch auto: --batch 1000 --max-batch auto, with a warning)."""

    @wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        block, max_rows = kw["batch"], kw.pop("max_batch")
        if block == "auto":
            if max_rows is not None:
                raise click.UsageError("--batch auto and --max-batch: give --max-batch auto (and --batch the noise "
                                       "block) instead")
            warn_deprecated("--batch auto", "use --max-batch auto (the noise block is --batch, default 1000)")
            block, max_rows = 1000, "auto"
        kw["batch"] = Batching(block, max_rows)
        return fn(*args, **kw)

    return wrapper


def _bound_forward(smooth: Smooth, batch: Batching, shape: tuple[int, ...]) -> None:
    """Bound ``smooth``'s forward passes by ``batch.max_rows`` without touching the noise block:
    a bound >= the block caps the probed forward chunk (Smooth's ``max_batch``), a smaller one
    runs each block in forward chunks of that many rows (``chunk_size``). Either way only speed
    and memory change (``sampling.draw_counts``: the chunk never changes the counts)."""
    rows = batch.max_rows
    if rows is None:
        return
    if rows == "auto":  # the cap Smooth's max_batch="auto" derives (sampling.Sampler), computed here
        from .. import sampling

        s = smooth.sampler
        rows = sampling.memory_cap(getattr(s.model, "_orig_mod", s.model), shape, s.device, s.dtype)
    if rows >= batch.block:
        smooth.max_batch = rows
    else:
        smooth.chunk_size = rows


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
        click.option("--batch", "batch", type=_RowsType(), default="1000", show_default=True,
                     help="The noise block: noisy samples are drawn BATCH at a time from each input's seeded "
                          "generator (part of what is computed, recorded in the metadata); forward passes hold up "
                          "to BATCH rows (the fastest chunk is probed) unless --max-batch says otherwise."),
        click.option("--max-batch", "max_batch", type=_RowsType(), default=None,
                     help="At most MAX_BATCH rows per forward pass, or 'auto': half the free memory; speed and "
                          "memory only, the results are those of --batch (not recorded).  [default: --batch]"),
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
    fn = _batching(fn)
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def selection(skip: int, max_count: int | None, shard: str | None = None) -> Selection:
    """The inputs ``--skip``/``--max`` select (``--max`` omitted: all), with ``--shard`` only its shard."""
    from ..runs import Selection
    from ..shards import parse_shard

    return Selection(skip, -1 if max_count is None else max_count, parse_shard(shard))


def _prepare(model: ModelSource, dataset: str | None, data_root: str | None, split: str, sigma: float | None,
             noise: str | None, alpha: float, batch: Batching, device: str | None, amp: str, channels_last: bool,
             compile_model: bool, out: Path, denoiser: Path | None = None) -> tuple[Smooth, Any]:
    """Check the arguments (before any work), load the model and data, build the smoothed classifier
    (with --noise, default the noise the model was trained with; an unknown noise is refused by
    ``Smooth``, before any file is written)."""
    from ..noise import config_noise
    from ..smoothing import Smooth

    check_alpha(alpha)
    check_int("batch_size", batch.block, 1)
    if batch.max_rows not in (None, "auto"):
        check_int("max_batch", batch.max_rows, 1)
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
                    amp_dtype=amp_dtype(amp, dev), channels_last=channels_last, compile=compile_model)
    _bound_forward(smooth, batch, tuple(ds.input_shape))
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
@click.option("--pool", type=int, default=None,
              help="With --sequential: keep up to POOL inputs active at once, their samples filling each forward "
                   "batch of --batch rows (an input that stops frees its rows for the next). Each input draws "
                   "from its own generator seeded by (--seed, idx), so the log is the one without --pool; speed "
                   "only (recorded, not checked on resume). Needs --pack 1.")
@click.option("--sequence", type=click.Choice(SEQUENCES), default=None,
              help="With --sequential: the anytime-valid confidence sequence for pA (smoothcert.sequential): "
                   "mixture (one-sided Beta mixture, valid at every n), cp-union (Clopper-Pearson, union bound, "
                   "n_max-free spending) or cp-geometric (the second release's; resumes its logs).  "
                   f"[default: {DEFAULT_SEQUENCE}]")
@user_errors
def certify(model: ModelSource, dataset: str | None, data_root: str | None, split: str, sigma: float | None,
            noise: str | None, denoiser: Path | None, alpha: float, batch: int | str, skip: int,
            max_count: int | None, shard: str | None, out: Path, seed: int | None, pack: int, device: str | None,
            amp: str, channels_last: bool, compile_model: bool,
            quiet: bool, n0: int, n: int, norm: str | None, bound: str, sequential: bool, radii_spec: str | None,
            tol: float | None, sequence: str | None, pool: int | None) -> None:
    """Certify the smoothed classifier on a dataset split (CERTIFY of Cohen et al., 2019).

    MODEL is a run directory written by `smoothcert train` or a checkpoint file (the reference
    code's cifar_resnet20/110 checkpoints work too), or leave it out and give any model with
    --model (and --dataset). Writes one TSV line per input:
    idx label predict radius correct time (predict -1 = abstain, radius in pixel units of the
    --norm norm), then nA n (the estimation samples that voted the selected class, of n: the
    distribution of pA, `analyze` and `plot-pa`); with --sequential one more column n_used
    (estimation samples drawn) instead.
    """
    from ..analysis import parse_radii
    from ..certification import certify_dataset, run_summary
    from ..sequential import check_radii

    check_int("n0", n0, 1)
    check_int("n", n, 1)
    chosen = selection(skip, max_count, shard)  # a bad --shard before anything is loaded
    radii = None
    for flag, given in (("--radii", radii_spec is not None), ("--tol", tol is not None),
                        ("--sequence", sequence is not None), ("--pool", pool is not None)):
        if given and not sequential:
            raise click.BadParameter("needs --sequential", param_hint=flag)
    if radii_spec is not None:
        try:
            radii = check_radii(parse_radii(radii_spec))
        except ValueError as e:
            raise click.BadParameter(str(e).splitlines()[0], param_hint="--radii") from None
    if tol is not None:
        check_float("tol", tol, 0.0, lo_open=True)
    if pool is not None:
        check_int("pool", pool, 1)
        if pack != 1:
            raise click.BadParameter(f"the pool packs inputs itself (each with its own generator): leave --pack at 1, "
                                     f"got --pack {pack}", param_hint="--pool")
    smooth, ds = _prepare(model, dataset, data_root, split, sigma, noise, alpha, batch, device, amp, channels_last,
                          compile_model, out, denoiser)
    norm, bound = smooth.check_options(norm, bound)  # --norm/--bound for this noise, before the log is created
    report = certify_dataset(smooth, ds, out, n0=n0, n=n, alpha=alpha, batch_size=_noise_block(batch),
                             selection=chosen, seed=seed, pack=pack,
                             progress=not quiet, norm=norm, bound=bound,
                             sequential=sequential, radii=radii, tol=tol,
                             **({"sequence": sequence or DEFAULT_SEQUENCE} if sequential else {}),
                             **({"pool": pool} if pool is not None else {}))
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
