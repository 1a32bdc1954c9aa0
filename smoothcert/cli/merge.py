"""``smoothcert merge``: a thin wrapper over ``smoothcert.shards.merge_logs``."""
from __future__ import annotations

from pathlib import Path

import click

from . import main
from .common import user_errors


@main.command()
@click.argument("logs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The merged log (and its .meta.json): rows sorted by idx, the metadata of the unsharded run.")
@user_errors
def merge(logs: tuple[Path, ...], out: Path) -> None:
    """Merge the shard logs of `smoothcert certify --shard I/K` (or predict) into one log.

    The logs must be the K shards of one run: the same settings, model, data, seed and selection
    (all but the shard), each shard once, all K there, each complete. The merged log is the one
    the unsharded run writes (but for the time column); analyze and plot read it.
    """
    from ..shards import merge_logs

    path = merge_logs(logs, out)
    click.echo(f"merged {len(logs)} shards -> {path}")
