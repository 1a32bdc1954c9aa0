"""``smoothcert evaluate``: accuracy under common corruptions, a thin wrapper over
``smoothcert.corruptions.evaluate_corruptions``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from . import main
from ..validation import check_int, check_output
from .common import (ModelSource, batch_option, data_options, device_option, max_option, model_source_options,
                     quiet_option, resolve_device, seed_option, user_errors)


def format_table(result: dict[str, Any]) -> str:
    """The per-corruption accuracies (%) by severity, their mean and CE, then SA, RA and mCE."""
    sevs = [str(s) for s in result["severities"]]
    has_ce = result.get("CE") is not None
    width = max(len("corruption"), *(len(c) for c in result["corruptions"]))
    head = f"{'corruption':<{width}} " + " ".join(f"{'s' + s:>6}" for s in sevs) + f" {'mean':>6}"
    head += f" {'CE':>6}" if has_ce else ""
    lines = [head, "-" * len(head)]
    for c in result["corruptions"]:
        row = f"{c:<{width}} " + " ".join(f"{100 * result['accuracy'][c][s]:6.1f}" for s in sevs)
        row += f" {100 * result['corruption_accuracy'][c]:6.1f}"
        row += f" {100 * result['CE'][c]:6.1f}" if has_ce else ""
        lines.append(row)
    summary = f"SA {100 * result['SA']:.2f}%  RA {100 * result['RA']:.2f}%"
    summary += f"  mCE {100 * result['mCE']:.1f}%" if has_ce else ""
    lines += ["-" * len(head), summary + f"  ({result['num_images']} images)"]
    return "\n".join(lines)


@main.command()
@model_source_options
@click.option("--corruptions", default="all", show_default=True,
              help="'all' or comma-separated names: gaussian_noise, shot_noise, impulse_noise, speckle_noise, "
                   "gaussian_blur, defocus_blur, motion_blur, zoom_blur, contrast, brightness, pixelate, "
                   "jpeg_compression.")
@click.option("--severities", default="1,2,3,4,5", show_default=True, help="Comma-separated severities in 1..5.")
@data_options
@click.option("--baseline", type=click.Path(path_type=Path), default=None,
              help="RESULT.json of the baseline model (from smoothcert evaluate --out): adds CE and mCE.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the result as JSON here.")
@max_option("images (the first ones)")
@batch_option(256, "Rows (corrupted images) per forward pass.")
@seed_option("the random corruptions (results depend on it and on --batch)")
@device_option()
@quiet_option()
@user_errors
def evaluate(model: ModelSource, corruptions: str, severities: str, dataset: str | None, data_root: str | None, split: str,
             baseline: Path | None, out: Path | None, max_count: int | None, batch: int, seed: int,
             device: str | None, quiet: bool) -> None:
    """Accuracy of MODEL under common corruptions (Hendrycks & Dietterich, 2019).

    MODEL is a run directory written by `smoothcert train` or a checkpoint (or leave it out and give
    any model with --model). Reports SA (clean
    accuracy), RA (mean accuracy over corruptions and severities), the accuracy per corruption
    and severity, and with --baseline the corruption errors CE and their mean mCE.
    """
    from ..corruptions import evaluate_corruptions, load_result, parse_corruptions, parse_severities
    from ..logs import atomic_write_json

    try:
        names = parse_corruptions(corruptions)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--corruptions") from None
    try:
        sevs = parse_severities(severities)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--severities") from None
    check_int("batch_size", batch, 1)
    if out is not None:
        check_output("out", out)
    base = None
    if baseline is not None:
        try:
            base = load_result(baseline)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--baseline") from None
    dev = resolve_device(device)
    net, config, ds = model.load(dataset, data_root, split, dev)
    result = evaluate_corruptions(net, ds, names, sevs, batch_size=batch, seed=seed, baseline=base,
                                  max_images=max_count, device=dev, progress=not quiet and sys.stderr.isatty())
    result.update({"model": str(model), "split": split,
                   "baseline": None if baseline is None else str(baseline)})
    if out is not None:
        atomic_write_json(result, out)
    click.echo(format_table(result))
