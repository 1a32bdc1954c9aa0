"""The normalisation layer that every smoothcert model starts with."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class NormalizeLayer(nn.Module):
    """(x - mean) / std per channel, with mean and std as registered buffers. Noise, attacks and
    radii therefore all live in [0, 1] pixel space, as in Cohen et al."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be > 0, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
