"""Helpers shared by methods that run extra forward passes (MaxUp's selection, ALPS, attacks).

* ``unwrap(model)``: the module inside a ``DistributedDataParallel`` wrapper. The Trainer passes
  methods the wrapped model under torchrun; extra passes that need no gradient all-reduce
  (no-grad selection passes, attacks on the input) should run on ``unwrap(model)``, so that they
  do not trigger DDP's per-forward buffer broadcast or its gradient hooks. The one forward whose
  loss is returned must go through ``model`` itself.
* ``batch_stats_only(model)``: inside the block, BatchNorm layers in train mode normalise with
  the statistics of the current batch, as in a training forward, but do not update their running
  mean/var or ``num_batches_tracked``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def unwrap(model: nn.Module) -> nn.Module:
    """``model.module`` for a DistributedDataParallel (or DataParallel) wrapper, else ``model``."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    return model.module if isinstance(model, (DistributedDataParallel, DataParallel)) else model


@contextmanager
def batch_stats_only(model: nn.Module) -> Iterator[nn.Module]:
    """Forwards in this block use batch statistics in train mode (eval mode is unaffected) and
    leave every BatchNorm's running statistics and ``num_batches_tracked`` untouched.

    Implemented by switching ``track_running_stats`` off: in train mode BatchNorm then normalises
    with batch statistics and skips the running-average update. Restored on exit, also after an
    exception."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield model
    finally:
        for m in layers:
            m.track_running_stats = True


__all__ = ["batch_stats_only", "unwrap"]
