"""scikit-learn's bundled 8x8 handwritten digits: 1797 images, the offline default.

Fixed split: a seeded permutation (seed 0) puts 1297 images in ``train`` and 500 in ``test``."""
from __future__ import annotations

import numpy as np
import torch

from . import TensorImageDataset, register_dataset

TEST_SIZE = 500


@register_dataset("digits", needs_root=False, help="bundled with scikit-learn")
def load_digits(split: str, root: str | None = None, download: bool = False) -> TensorImageDataset:
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.from_numpy(np.random.RandomState(0).permutation(len(y)))
    idx = perm[TEST_SIZE:] if split == "train" else perm[:TEST_SIZE]
    return TensorImageDataset(x[idx], y[idx], name="digits", num_classes=10, mean=(0.0,), std=(1.0,),
                              default_arch="digits_cnn")
