"""A deterministic synthetic dataset for tests: class c is a fixed random prototype image plus
noise, clipped to [0, 1]. Learnable in a few steps, any shape."""
from __future__ import annotations

import torch

from . import TensorImageDataset, register_dataset


def make_synthetic(n: int = 256, num_classes: int = 4, shape: tuple[int, int, int] = (1, 8, 8),
                   seed: int = 0, noise: float = 0.1) -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand((num_classes, *shape), generator=torch.Generator().manual_seed(1234))
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = (protos[y] + noise * torch.randn((n, *shape), generator=g)).clamp_(0, 1)
    return TensorImageDataset(x, y, name="synthetic", num_classes=num_classes,
                              mean=(0.5,) * shape[0], std=(0.25,) * shape[0], default_arch="digits_cnn")


@register_dataset("synthetic", needs_root=False, help="generated")
def load_synthetic(split: str, root: str | None = None, download: bool = False) -> TensorImageDataset:
    return make_synthetic(n=512 if split == "train" else 128, seed=0 if split == "train" else 1)
