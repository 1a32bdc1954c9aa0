"""Helpers shared by methods that run extra forward passes (MaxUp's selection, ALPS, attacks).

* ``unwrap(model)``: the module inside a ``DistributedDataParallel`` wrapper. The Trainer passes
  methods the wrapped model under torchrun; extra passes that need no gradient all-reduce
  (no-grad selection passes, attacks on the input) should run on ``unwrap(model)``, so that they
  do not trigger DDP's per-forward buffer broadcast or its gradient hooks. The one forward whose
  loss is returned must go through ``model`` itself.
* ``batch_stats_only(model)``: inside the block, BatchNorm layers in train mode normalise with
  the statistics of the current batch, as in a training forward, but do not update their running
  mean/var or ``num_batches_tracked``.
* ``noisy_copies(noise, x, m)``: m noise draws per input and the (m * B, ...) batch of noisy
  copies in copy-major order (row k * B + i is x_i + d_k), the layout every multi-copy method
  (Consistency, MACER, SmoothMix, CAT-RS, SmoothAdv) trains on; ``per_copy`` views (m * B, K)
  outputs as (m, B, K).
* ``check_number``: one check for the float hyperparameters of the methods.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..noise import Noise
from ..validation import ArgumentError


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


def noisy_copies(noise: Noise, x: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(d, x_noisy): d of shape (m, *x.shape) drawn from ``noise``, and x_noisy = (x + d_k)_k
    flattened to (m * B, ...) in copy-major order (row k * B + i is x_i + d_k)."""
    d = noise.sample_(x.new_empty((m, *x.shape)))
    return d, (x.unsqueeze(0) + d).flatten(0, 1)


def per_copy(out: torch.Tensor, m: int) -> torch.Tensor:
    """(m * B, K) outputs of copy-major noisy copies as (m, B, K)."""
    return out.view(m, out.shape[0] // m, *out.shape[1:])


def check_number(name: str, value: Any, lo: float = 0.0, positive: bool = False) -> float:
    """``value`` as a float: ArgumentError naming ``name`` unless it is a finite real >= ``lo``
    (> ``lo`` with ``positive``)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < lo or (positive and value == lo):
        raise ArgumentError(name, f"{name} must be a finite number {'>' if positive else '>='} {lo:g}, got {value!r}")
    return float(value)


__all__ = ["batch_stats_only", "check_number", "noisy_copies", "per_copy", "unwrap"]
