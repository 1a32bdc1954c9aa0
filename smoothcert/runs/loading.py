"""Loading models: from a run directory (``RunDir``, see ``smoothcert.runs.directory``) or a checkpoint
file, with the dataset to evaluate them on.

Checkpoints saved by Cohen et al.'s reference code (``{"arch": "cifar_resnet110",
"state_dict": {"1.conv1.weight": ...}, ...}``, normalisation layer first and without buffers)
load too. A model loaded here remembers where it came from (``provenance``), so that
``certify_dataset`` records its run directory and training config without being told.
"""
from __future__ import annotations

import hashlib
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import ImageDataset, get_dataset
from .directory import (CHECKPOINT_NAME, CONFIG_NAME, FORMAT, RunDir, build_model, load_weights, read_checkpoint_file,
                     validate_config)
from ..validation import ArgumentError

# Reference checkpoints carry only the arch name: the data they were trained on follows from it.
_REFERENCE_ARCHS: dict[str, dict[str, Any]] = {
    name: {"dataset": "cifar10", "input_shape": [3, 32, 32],
           "mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010]}
    for name in ("cifar_resnet20", "cifar_resnet110")
}

_PROVENANCE: "weakref.WeakKeyDictionary[nn.Module, dict[str, Any]]" = weakref.WeakKeyDictionary()


def provenance(model: Any) -> dict[str, Any] | None:
    """``{"model": path, "config": config}`` for a model returned by ``load_model``, else None."""
    try:
        return _PROVENANCE.get(model)
    except TypeError:  # not weak-referenceable
        return None


def model_fingerprint(model: Any) -> str | None:
    """SHA-256 of a module's state (names, dtypes, shapes, values; memory layout ignored), or None
    for a plain callable: tells whether two runs used the same weights."""
    if not isinstance(model, nn.Module):
        return None
    return state_fingerprint(model.state_dict())


def state_fingerprint(state_dict: Any) -> str:
    """``model_fingerprint`` of a state dict (a mapping of names to tensors)."""
    h = hashlib.sha256()
    for name, t in sorted(state_dict.items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The validated config.json of a run directory."""
    return RunDir(run_dir).read_config()


def _reference_config(ckpt: dict[str, Any], where: str) -> dict[str, Any]:
    arch = ckpt.get("arch")
    if arch not in _REFERENCE_ARCHS:
        raise ArgumentError("model", f"model: {where} has no smoothcert config and its arch {arch!r} is not one of "
                                     f"the reference archs ({', '.join(sorted(_REFERENCE_ARCHS))})")
    fc = next((v for k, v in ckpt["state_dict"].items() if k.endswith("fc.weight")), None)
    if not isinstance(fc, torch.Tensor) or fc.dim() != 2:
        raise ArgumentError("model", f"model: {where} has no fc.weight matrix: cannot tell the number of classes")
    return {"arch": arch, "num_classes": int(fc.shape[0]), "model_kwargs": {}, "method": "unknown",
            "method_params": {}, "sigma": None, **_REFERENCE_ARCHS[arch]}


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Sequential, dict[str, Any]]:
    """Load a model from a run directory or a checkpoint file; returns (model in eval mode, config).
    A run of the ``denoiser`` method loads as ``Denoised(denoiser, classifier)`` with the
    classifier it records (``denoisers.loading.deployed``).
    ArgumentError (argument ``model``, one line) for a missing, corrupt or unknown checkpoint, a
    damaged config, or weights that do not fit the architecture."""
    path = Path(path)
    if path.is_dir() and path.suffix in (".pt", ".pth", ".tar") and not (path / CONFIG_NAME).exists():
        raise ArgumentError("model", f"model: {str(path)!r} is a directory, not a checkpoint file")
    if path.is_dir():
        model, config = RunDir(path).load_model(device)
    else:
        ckpt = read_checkpoint_file(path)
        where = f"checkpoint {str(path)!r}"
        config = ckpt.get("config")
        if config is None and (path.parent / CONFIG_NAME).is_file():
            config = RunDir(path.parent).read_config()
        reference = config is None
        config = _reference_config(ckpt, where) if reference else validate_config(config, where)
        model = build_model(config, where)
        load_weights(model, ckpt["state_dict"], where, frozenset({"0.mean", "0.std"}) if reference else frozenset(),
                     arch=config["arch"])
        model = model.to(device).eval()
    from ..denoisers.loading import deployed  # a denoiser run: Denoised(denoiser, its recorded classifier)

    model = deployed(model, config, device, repr(str(path)))
    _PROVENANCE[model] = {"model": str(path), "config": config}
    return model, config


def check_compatible(config: dict[str, Any], dataset: ImageDataset) -> None:
    """ValueError if a model's config does not fit the dataset (classes, input shape)."""
    if int(config["num_classes"]) != dataset.num_classes:
        raise ArgumentError("dataset", f"dataset: model has {config['num_classes']} classes but dataset "
                                       f"{dataset.name!r} has {dataset.num_classes}")
    if tuple(config["input_shape"]) != tuple(dataset.input_shape):
        raise ArgumentError("dataset", f"dataset: model expects inputs of shape {tuple(config['input_shape'])} but "
                                       f"dataset {dataset.name!r} has {tuple(dataset.input_shape)}")


def load_model_and_dataset(path: str | Path, dataset: str | None = None, data_root: str | None = None,
                           split: str = "test", device: str | torch.device = "cpu"
                           ) -> tuple[nn.Sequential, dict[str, Any], ImageDataset]:
    """``load_model(path)`` plus the dataset to evaluate it on: ``dataset``/``data_root`` default
    to the ones the model was trained with; ValueError if the model does not fit the data."""
    model, config = load_model(path, device)
    name = dataset or config.get("dataset")
    if name is None:
        raise ArgumentError("dataset", "dataset: the model records no dataset: give --dataset")
    root = data_root if data_root is not None else config.get("data_root")
    ds = get_dataset(name, split, root)
    check_compatible(config, ds)
    return model, config, ds


__all__ = ["CHECKPOINT_NAME", "CONFIG_NAME", "FORMAT", "RunDir", "build_model", "check_compatible", "load_model",
           "load_model_and_dataset", "model_fingerprint", "provenance", "read_config"]
