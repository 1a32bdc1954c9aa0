"""``smoothcert analyze`` and ``smoothcert plot``: thin wrappers over ``smoothcert.analysis``
(``summarize``/``format_table``) and ``smoothcert.plotting.plot_certified_accuracy``; the library is
imported inside the commands, so that ``--help`` starts at once."""
from __future__ import annotations

from pathlib import Path

import click

from . import main
from ..validation import check_float, check_output
from .common import user_errors
from .names import TABLE_FORMATS as FORMATS

_SUFFIX_FORMAT = {".md": "md", ".tex": "latex", ".json": "json", ".csv": "csv"}


def table_format(fmt: str | None, out: Path | None) -> str:
    """The table format: ``--format``, else the one ``--out``'s suffix names, else md (printing).
    An ``--out`` suffix that names no format is refused rather than filled with Markdown."""
    if fmt is not None:
        return fmt
    if out is None:
        return "md"
    if out.suffix.lower() not in _SUFFIX_FORMAT:
        raise click.BadParameter(f"cannot tell the table format from {out.name!r}: use a suffix "
                                 f"{', '.join(_SUFFIX_FORMAT)} or give --format", param_hint="--out")
    return _SUFFIX_FORMAT[out.suffix.lower()]


def _check_labels(labels: tuple[str, ...], logs: tuple[Path, ...]) -> list[str] | None:
    if labels and len(labels) != len(logs):
        raise click.BadParameter(f"give one per log: got {len(labels)} for {len(logs)} logs", param_hint="--label")
    return list(labels) or None


_logs_argument = click.argument("logs", nargs=-1, required=True, type=click.Path(path_type=Path))
_label_option = click.option("--label", "labels", multiple=True,
                             help="Legend/row label, once per log in order (default: from LOG.tsv.meta.json: "
                                  "method, distinguishing params, sigma; else the file name). Each row or curve "
                                  "also names its certificate (noise, norm, bound) from the meta.")
_mixed_option = click.option("--mixed", "allow_mixed", is_flag=True,
                             help="Allow the envelope and the best cells across logs of different norms or of "
                                  "different inputs (sets of idx), refused otherwise. A log without meta is read "
                                  "as L2.")


@main.command()
@_logs_argument
@click.option("--radii", default=None,
              help="Radii: START:STOP:STEP (STOP included, e.g. 0:2.5:0.25) or a list (0,0.5,1). "
                   "Default: 0 to the largest certified radius in steps of 0.25.")
@_label_option
@click.option("--envelope", is_flag=True, help="Add the best certified accuracy over the certify logs at each radius.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Table format (default: from the --out suffix .md/.tex/.json/.csv; md when printing).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the table here (atomically) instead of printing it.")
@_mixed_option
@user_errors
def analyze(logs: tuple[Path, ...], radii: str | None, labels: tuple[str, ...], envelope: bool, fmt: str | None,
            out: Path | None, allow_mixed: bool) -> None:
    """Compare certify / predict / attack logs: accuracy, abstain rate, ACR and certified
    accuracy at radii (Cohen et al., 2019), best of each column marked, each row's certificate
    (noise, norm, bound) named.

    Logs written by the reference code (locuslab/smoothing) are read too (as L2, noise and
    bound unknown). A log without a radius column shows its plain accuracy; its certified
    accuracy at r > 0 is '-'. Logs of different norms or inputs are compared only with --mixed.
    """
    from ..analysis import format_table, load_log, parse_radii, summarize
    from ..logs import atomic_write_bytes

    if out is not None:
        check_output("out", out)
    fmt = table_format(fmt, out)
    names = _check_labels(labels, logs)
    try:
        grid = None if radii is None else parse_radii(radii)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--radii") from None
    table = format_table(summarize([load_log(p) for p in logs], grid, names, envelope, allow_mixed), fmt)
    if out is None:
        click.echo(table, nl=False)
    else:
        atomic_write_bytes(out, table.encode("utf-8"))


@main.command()
@_logs_argument
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Figure file: .png, .pdf or .svg.")
@click.option("--max-radius", type=float, default=None,
              help="Right end of the radius axis (default: 5% past the largest certified radius).")
@_label_option
@click.option("--envelope", is_flag=True, help="Also draw the best over the logs at each radius.")
@click.option("--title", default=None, help="Figure title.")
@_mixed_option
@user_errors
def plot(logs: tuple[Path, ...], out: Path, max_radius: float | None, labels: tuple[str, ...], envelope: bool,
         title: str | None, allow_mixed: bool) -> None:
    """Plot certified accuracy vs radius for certify logs (one curve a log, its legend entry
    naming its certificate: noise, norm, bound). The envelope over logs of different norms or
    inputs is drawn only with --mixed."""
    from ..analysis import load_log
    from ..plotting import plot_certified_accuracy

    check_output("out", out)
    if max_radius is not None:
        check_float("max_radius", max_radius, 0.0, lo_open=True)
    names = _check_labels(labels, logs)
    plot_certified_accuracy([load_log(p) for p in logs], out, names, envelope, max_radius, title,
                            allow_mixed=allow_mixed)


@main.command("plot-pa")
@_logs_argument
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Figure file: .png, .pdf or .svg.")
@_label_option
@click.option("--title", default=None, help="Figure title.")
@user_errors
def plot_pa(logs: tuple[Path, ...], out: Path, labels: tuple[str, ...], title: str | None) -> None:
    """Plot the distribution of pA of certify logs: the histogram of the estimated pA = nA / n
    and the cumulative distribution of its lower bound pA_lower (the bound each certificate
    used), with each log's ceiling alpha^(1/n), the most its n samples can certify.

    Beside ACR, which easy inputs and the sampling budget dominate (Sun et al., ICML 2025): the
    logs need the counts nA and n (every fixed-N certify log of this release); `analyze --format
    json` gives the same distribution as quantiles (logs[].pa).
    """
    from ..analysis import load_log
    from ..plotting import plot_pa as plot

    check_output("out", out)
    names = _check_labels(labels, logs)
    plot([load_log(p) for p in logs], out, names, title)
