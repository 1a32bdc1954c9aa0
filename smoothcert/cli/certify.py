"""``smoothcert certify`` and ``smoothcert predict``: thin wrappers over
``smoothcert.certification.certify_dataset`` / ``predict_dataset``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import click

from . import main
from ..certification import Selection, certify_dataset, predict_dataset
from ..runs import load_model_and_dataset
from ..smoothing import Smooth
from ..validation import check_alpha, check_int, check_output, check_sigma
from .common import (amp_dtype, amp_option, batch_option, channels_last_option, data_options, device_option,
                     max_option, quiet_option, resolve_device, seed_option, user_errors)


def _smoothing_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.argument("model", type=click.Path(path_type=Path)),
        data_options,
        click.option("--sigma", type=float, default=None,
                     help="Noise level (pixel scale, [0,1] data). Default: the sigma the model was trained with."),
        click.option("--alpha", type=float, default=0.001, show_default=True, help="Failure probability."),
        batch_option(1000, "Rows (noisy samples) per forward pass."),
        click.option("--skip", type=int, default=1, show_default=True, help="Take every SKIP-th input of the split."),
        max_option("inputs (counts selected inputs, not dataset indices as the original code did)"),
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


def selection(skip: int, max_count: int | None) -> Selection:
    """The inputs ``--skip``/``--max`` select (``--max`` omitted: all)."""
    return Selection(skip, -1 if max_count is None else max_count)


def _prepare(model: Path, dataset: str | None, data_root: str | None, split: str, sigma: float | None,
             alpha: float, batch: int, device: str | None, amp: str, channels_last: bool,
             compile_model: bool, out: Path) -> tuple[Smooth, Any, dict[str, Any]]:
    """Check the arguments (before any work), load the model and data, build the smoothed classifier."""
    check_alpha(alpha)
    check_int("batch_size", batch, 1)
    check_output("out", out)
    if sigma is not None:
        check_sigma(sigma, positive=True)
    dev = resolve_device(device)
    net, config, ds = load_model_and_dataset(model, dataset, data_root, split, dev)
    if sigma is None:
        sigma = config.get("sigma")
        if not sigma:
            raise click.BadParameter("the model records no training sigma: give --sigma", param_hint="--sigma")
    smooth = Smooth(net, int(config["num_classes"]), sigma, amp_dtype=amp_dtype(amp, dev),
                    channels_last=channels_last, compile=compile_model)
    meta = {"model": str(model), "config": config, "dataset": ds.name, "split": split}
    return smooth, ds, meta


@main.command()
@_smoothing_options
@click.option("--N0", "n0", type=int, default=100, show_default=True, help="Selection samples.")
@click.option("--N", "n", type=int, default=100_000, show_default=True, help="Estimation samples.")
@user_errors
def certify(model: Path, dataset: str | None, data_root: str | None, split: str, sigma: float | None, alpha: float,
            batch: int, skip: int, max_count: int | None, out: Path, seed: int, pack: int, device: str | None,
            amp: str, channels_last: bool, compile_model: bool, quiet: bool, n0: int, n: int) -> None:
    """Certify the smoothed classifier on a dataset split (CERTIFY of Cohen et al., 2019).

    MODEL is a run directory written by `smoothcert train` or a checkpoint file (the reference
    code's cifar_resnet20/110 checkpoints work too). Writes one TSV line per input:
    idx label predict radius correct time (predict -1 = abstain, radius in L2 pixel units).
    """
    check_int("n0", n0, 1)
    check_int("n", n, 1)
    smooth, ds, meta = _prepare(model, dataset, data_root, split, sigma, alpha, batch, device, amp, channels_last,
                                compile_model, out)
    meta["certify"] = {"sigma": smooth.sigma, "N0": n0, "N": n, "alpha": alpha, "batch": batch}
    certify_dataset(smooth, ds, out, n0=n0, n=n, alpha=alpha, batch_size=batch, selection=selection(skip, max_count),
                    seed=seed, pack=pack, meta=meta, progress=not quiet and sys.stderr.isatty())


@main.command()
@_smoothing_options
@click.option("--N", "n", type=int, default=100_000, show_default=True, help="Monte Carlo samples.")
@user_errors
def predict(model: Path, dataset: str | None, data_root: str | None, split: str, sigma: float | None, alpha: float,
            batch: int, skip: int, max_count: int | None, out: Path, seed: int, pack: int, device: str | None,
            amp: str, channels_last: bool, compile_model: bool, quiet: bool, n: int) -> None:
    """Predict with the smoothed classifier on a dataset split (PREDICT of Cohen et al., 2019).

    Writes one TSV line per input: idx label predict correct time (predict -1 = abstain).
    """
    check_int("n", n, 1)
    smooth, ds, meta = _prepare(model, dataset, data_root, split, sigma, alpha, batch, device, amp, channels_last,
                                compile_model, out)
    meta["predict"] = {"sigma": smooth.sigma, "N": n, "alpha": alpha, "batch": batch}
    predict_dataset(smooth, ds, out, n=n, alpha=alpha, batch_size=batch, selection=selection(skip, max_count),
                    seed=seed, pack=pack, meta=meta, progress=not quiet and sys.stderr.isatty())
