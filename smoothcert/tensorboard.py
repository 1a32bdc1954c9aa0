"""Training curves in TensorBoard, optional: ``train(..., tensorboard=True)`` / ``smoothcert train
--tensorboard`` writes each finished epoch's scalars -- the columns of ``train_log.tsv``:
``train/loss``, ``train/accuracy``, ``test/accuracy_noisy``, ``lr``, ``epoch_seconds`` -- at step
= the epoch, with ``torch.utils.tensorboard`` (``tensorboard --logdir RUN/tensorboard``).

It needs the ``tensorboard`` package, which smoothcert never requires: without it the call is
refused before any training, one line naming the package (``ArgumentError("tensorboard")``). The
event files go to ``RUN/tensorboard`` (or the folder given), written by the process that writes
the run (rank 0 under torchrun), opened with the first finished epoch (so a run killed before its
first checkpoint leaves no folder that would block a fresh start); a resume appends to them and
drops the events of epochs after its checkpoint (``purge_step``), so curves never show an epoch
twice. ``train_log.tsv`` stays the record; these are for looking.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from .validation import ArgumentError

FOLDER = "tensorboard"  # RUN/tensorboard, the default log folder
SCALARS = (("train/loss", "train_loss"), ("train/accuracy", "train_acc"), ("test/accuracy_noisy", "test_acc_noisy"),
           ("lr", "lr"), ("epoch_seconds", "seconds"))


def writer_class() -> Callable[..., Any]:
    """``torch.utils.tensorboard.SummaryWriter``; ArgumentError("tensorboard") naming the missing
    package when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as e:  # noqa: BLE001  (ImportError, or a tensorboard that does not fit this torch)
        raise ArgumentError("tensorboard", f"tensorboard: needs the tensorboard package, which is not installed "
                                           f"({type(e).__name__}); pip install tensorboard, or train without it "
                                           "(train_log.tsv holds the same numbers)") from None
    return SummaryWriter


def log_folder(out_dir: str | os.PathLike, tensorboard: bool | str | os.PathLike | None) -> Path | None:
    """The event folder ``train(tensorboard=...)`` asks for: None (False/None), ``out_dir/tensorboard``
    (True) or the folder given; ArgumentError("tensorboard") for another value."""
    if tensorboard is None or tensorboard is False:
        return None
    if tensorboard is True:
        return Path(out_dir) / FOLDER
    if isinstance(tensorboard, (str, os.PathLike)) and str(tensorboard):
        return Path(tensorboard)
    raise ArgumentError("tensorboard", f"tensorboard must be True, False or a folder, got {tensorboard!r}")


class EpochScalars:
    """``on_epoch`` hook: the scalars of each ``EpochResult`` into ``folder`` (see the module doc).
    ``start``: the epoch the run resumes after (its later events are purged)."""

    def __init__(self, folder: Path, start: int = 0):
        self.folder, self.start = Path(folder), start
        self.factory = writer_class()  # refused here, before any training, without the package
        self.writer: Any = None

    def __call__(self, r: Any) -> None:
        if self.writer is None:
            self.writer = self.factory(log_dir=str(self.folder), purge_step=self.start + 1)
        for tag, field in SCALARS:
            self.writer.add_scalar(tag, float(getattr(r, field)), int(r.epoch))
        self.writer.flush()

    def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()


__all__ = ["EpochScalars", "FOLDER", "SCALARS", "log_folder", "writer_class"]
