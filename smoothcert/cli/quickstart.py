"""``smoothcert quickstart``: a thin wrapper over ``smoothcert.quickstart.quickstart``."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from . import main
from .common import user_errors


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("quickstart"), show_default=True,
              help="Folder for the two runs, their certify logs, table.md, summary.json and the figure.")
@click.option("--small", is_flag=True, help="Reduced size (3 epochs, N = 500, 10 inputs): a smoke run for CI.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def quickstart(out: Path, small: bool, quiet: bool) -> None:
    """Train gauss and maxup-gauss on the bundled digits (sigma 0.25), certify 200 held-out
    inputs with N = 10 000, print the comparison table and write the plot. Offline, a few
    minutes on 2 CPU cores; rerunning resumes."""
    from ..quickstart import QuickstartSettings, quickstart as run

    settings = QuickstartSettings.small() if small else QuickstartSettings()
    run(out, settings, quiet=quiet or not sys.stderr.isatty(), echo=click.echo)
