"""Run directories and checkpoints: what ``smoothcert train`` writes and what every other command
loads.

A run directory holds ``config.json`` (everything needed to rebuild and certify the model) and
``checkpoint.pt``, a ``weights_only``-safe dict::

    {"format": "smoothcert-1", "arch": str, "state_dict": {...}, "config": {...}, "epoch": int, ...}

``config`` has at least: dataset, arch, num_classes, input_shape [C, H, W], mean, std,
model_kwargs, sigma, method, method_params. Checkpoints saved by Cohen et al.'s reference code
(``{"arch": "cifar_resnet110", "state_dict": {"1.conv1.weight": ...}, ...}``, normalisation
layer first and without buffers) load too.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import ImageDataset, get_dataset
from .logs import safe_torch_load
from .models import create_model

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
FORMAT = "smoothcert-1"

# Reference checkpoints carry only the arch name: the data they were trained on follows from it.
_REFERENCE_ARCHS: dict[str, dict[str, Any]] = {
    name: {"dataset": "cifar10", "input_shape": [3, 32, 32],
           "mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010]}
    for name in ("cifar_resnet20", "cifar_resnet110")
}


def build_model(config: dict[str, Any]) -> nn.Sequential:
    """The model a config describes (random weights)."""
    c, h, _ = config["input_shape"]
    return create_model(config["arch"], num_classes=int(config["num_classes"]), in_channels=int(c),
                        input_size=int(h), mean=config.get("mean"), std=config.get("std"),
                        **config.get("model_kwargs", {}))


def read_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"{str(run_dir)!r} has no {CONFIG_NAME}; is it a run directory written by smoothcert train?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON: {e.msg}") from None


def _reference_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    arch = ckpt.get("arch")
    if arch not in _REFERENCE_ARCHS:
        raise ValueError(f"checkpoint has no smoothcert config and its arch {arch!r} is not one of the reference "
                         f"archs ({', '.join(sorted(_REFERENCE_ARCHS))})")
    sd = ckpt["state_dict"]
    fc = next((v for k, v in sd.items() if k.endswith("fc.weight")), None)
    if fc is None:
        raise ValueError("reference checkpoint has no fc.weight: cannot tell the number of classes")
    return {"arch": arch, "num_classes": int(fc.shape[0]), "model_kwargs": {}, "method": "unknown",
            "method_params": {}, "sigma": None, **_REFERENCE_ARCHS[arch]}


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Sequential, dict[str, Any]]:
    """Load a model from a run directory or a checkpoint file; returns (model in eval mode, config).
    ValueError with a one-line reason for a missing, corrupt or unknown checkpoint."""
    path = Path(path)
    if path.is_dir():
        config = read_config(path)
        ckpt = safe_torch_load(path / CHECKPOINT_NAME)
    else:
        ckpt = safe_torch_load(path)
        config = None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{str(path)!r} is not a model checkpoint (no state_dict)")
    if config is None:
        config = ckpt.get("config") or (read_config(path.parent) if (path.parent / CONFIG_NAME).is_file() else None)
    reference = config is None
    if reference:
        config = _reference_config(ckpt)
    model = build_model(config)
    sd = {k.replace(".module.", ".", 1) if k.startswith("1.module.") else k: v for k, v in ckpt["state_dict"].items()}
    result = model.load_state_dict(sd, strict=False)
    allowed_missing = {"0.mean", "0.std"} if reference else set()
    if set(result.missing_keys) - allowed_missing or result.unexpected_keys:
        bad = (sorted(set(result.missing_keys) - allowed_missing) + result.unexpected_keys)[:3]
        raise ValueError(f"checkpoint {str(path)!r} does not match arch {config['arch']!r} (e.g. {', '.join(bad)})")
    return model.to(device).eval(), config


def check_compatible(config: dict[str, Any], dataset: ImageDataset) -> None:
    """ValueError if a model's config does not fit the dataset (classes, input shape)."""
    if int(config["num_classes"]) != dataset.num_classes:
        raise ValueError(f"model has {config['num_classes']} classes but dataset {dataset.name!r} has {dataset.num_classes}")
    if tuple(config["input_shape"]) != tuple(dataset.input_shape):
        raise ValueError(f"model expects inputs of shape {tuple(config['input_shape'])} but dataset "
                         f"{dataset.name!r} has {tuple(dataset.input_shape)}")


def load_model_and_dataset(path: str | Path, dataset: str | None = None, data_root: str | None = None,
                           split: str = "test", device: str | torch.device = "cpu"
                           ) -> tuple[nn.Sequential, dict[str, Any], ImageDataset]:
    """``load_model(path)`` plus the dataset to evaluate it on: ``dataset``/``data_root`` default
    to the ones the model was trained with; ValueError if the model does not fit the data."""
    model, config = load_model(path, device)
    name = dataset or config.get("dataset")
    if name is None:
        raise ValueError("the model records no dataset: give --dataset")
    root = data_root if data_root is not None else config.get("data_root")
    ds = get_dataset(name, split, root)
    check_compatible(config, ds)
    return model, config, ds
