"""The ``smoothcert`` command line: a thin ``click`` layer over the library.

Each command lives in its own module of this package and registers itself on ``main``; user
errors become exit status 2 with a one-line message (``click.BadParameter``/``click.UsageError``).
"""
from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="smoothcert")
def main() -> None:
    """Certified robustness by randomized smoothing: train, certify, analyse."""


from . import analyze, attack, certify, evaluate, merge, quickstart, train  # noqa: E402,F401  (each module adds its commands to main)
