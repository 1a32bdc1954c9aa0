"""Shared fixtures: a run directory with random weights on the digits data, and a CLI runner."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from smoothcert.logs import atomic_torch_save, atomic_write_json
from smoothcert.models import create_model

# Small models on a 2-core machine: one intra-op thread avoids oversubscription (tests that
# start subprocesses set OMP_NUM_THREADS themselves).
torch.set_num_threads(1)


def write_run(path: Path, arch: str = "digits_cnn", dataset: str = "digits", input_shape=(1, 8, 8),
              num_classes: int = 10, sigma: float = 0.25, seed: int = 0) -> Path:
    """A run directory in the format smoothcert train writes (random weights)."""
    torch.manual_seed(seed)
    c, h, _ = input_shape
    model = create_model(arch, num_classes, c, h)
    config = {"dataset": dataset, "arch": arch, "num_classes": num_classes, "input_shape": list(input_shape),
              "mean": [0.0] * c, "std": [1.0] * c, "model_kwargs": {}, "sigma": sigma, "method": "gauss",
              "method_params": {"sigma": sigma}}
    path.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"format": "smoothcert-1", "arch": arch, "state_dict": model.state_dict(), "config": config,
                       "epoch": 1}, path / "checkpoint.pt")
    atomic_write_json(config, path / "config.json")
    return path


def train_digits_cnn(epochs: int, sigma: float = 0.25, seed: int = 0) -> torch.nn.Module:
    """digits_cnn trained with plain SGD (lr 0.05, momentum 0.9, batch 64) on Gaussian-noisy digits,
    without the Trainer, so attack tests do not depend on it. Returned in eval mode, no grads."""
    import torch.nn.functional as F

    from smoothcert.data import get_dataset
    from smoothcert.noise import add_gaussian_noise

    torch.manual_seed(seed)
    ds = get_dataset("digits", "train")
    model = create_model("digits_cnn", 10, 1, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        perm = torch.randperm(len(ds))
        for k in range(0, len(ds), 64):
            i = perm[k:k + 64]
            loss = F.cross_entropy(model(add_gaussian_noise(ds.x[i], sigma)), ds.y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture
def digits_run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
