"""The classifier a command evaluates and its data, from any source: what ``certify``, ``predict``,
``attack``, ``check-certificates`` and ``evaluate`` call before their work.

* ``path``: a run directory of ``smoothcert train`` or a checkpoint file (``runs.load_model``; the
  dataset defaults to the one it was trained on);
* ``spec``: any model, ``models.external.load_external_model`` (``FILE.py:NAME``,
  ``package.module:NAME``, ``timm:NAME``, ``torchvision:NAME``, a TorchScript or ``.pt2`` file)
  with ``weights``, ``model_kwargs`` and ``normalize``; the dataset must be given.

The dataset is a registered name or the path of a tensor file or an image folder
(``data.external``); ``num_classes`` is the class count where the data cannot tell it (a tensor
file whose labels miss the last classes), and for a ``spec`` model must equal its number of logits.

``load_classifier`` returns a ``Classifier``: the model (eval mode, on ``device``), a config dict
in the shape of a run's config.json (``num_classes``, ``input_shape``, ``sigma`` -- None for an
external model: give the noise level --, ``dataset``), the dataset, and ``meta``: what the logs'
metadata must record beyond what the runner finds itself (for a ``spec``: ``model`` = the spec,
``config``, ``model_source`` = where it came from and the SHA-256 of the weights file; the runner
adds the weights' own fingerprint ``model_sha256``, so resuming a log with other weights is refused).
The model remembers it (``runs.provenance``), so ``certify_dataset`` / ``predict_dataset`` record it
without being told, as for a model from ``runs.load_model``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .data import DATASETS, ImageDataset, get_dataset
from .models.external import check_normalize, load_external_model, output_width
from .validation import ArgumentError, check_int


@dataclass
class Classifier:
    """A loaded base classifier: ``model``, its ``config``, the ``dataset`` to evaluate it on and the
    ``meta`` fields for the logs (see the module doc)."""

    model: nn.Module
    config: dict[str, Any]
    dataset: ImageDataset
    meta: dict[str, Any] = field(default_factory=dict)


def load_classifier(path: str | os.PathLike | None = None, *, spec: str | None = None,
                    weights: str | os.PathLike | None = None, model_kwargs: dict[str, Any] | None = None,
                    normalize: Sequence[Sequence[float]] | None = None, num_classes: int | None = None,
                    dataset: str | None = None, data_root: str | None = None, split: str = "test",
                    device: str | torch.device = "cpu") -> Classifier:
    """The classifier at ``path`` (run directory, checkpoint) or named by ``spec`` (any model), with
    its dataset (see the module doc). ArgumentError naming the argument: both or neither of
    ``path`` and ``spec``; ``weights``/``model_kwargs``/``normalize`` without ``spec``; no
    ``dataset`` for a ``spec``; a ``normalize`` of another channel count than the data; a
    ``num_classes`` that is not the model's; data of another shape or class count."""
    from .runs import check_compatible, load_model

    if (path is None) == (spec is None):
        raise ArgumentError("model", "model: give a run directory or checkpoint, or a model spec (--model), "
                                     + ("not both" if path is not None else "none was given"))
    if num_classes is not None:
        check_int("num_classes", num_classes, 2)
    if spec is None:
        for name, value in (("weights", weights), ("model_kwargs", model_kwargs), ("normalize", normalize)):
            if value is not None:
                raise ArgumentError(name, f"{name}: applies to a model given by its spec (--model), not to the run "
                                          f"directory or checkpoint {str(path)!r}, which holds its own")
        model, config = load_model(Path(path), device)
        name = dataset or config.get("dataset")
        if name is None:
            raise ArgumentError("dataset", "dataset: the model records no dataset: give --dataset")
        root = data_root if data_root is not None else config.get("data_root")
        ds = get_dataset(name, split, root, num_classes=num_classes)
        if num_classes is None and ds.num_classes < int(config["num_classes"]) and name not in DATASETS:
            ds.num_classes = int(config["num_classes"])  # a tensor file whose labels miss the last classes
        check_compatible(config, ds)
        return Classifier(model, config, ds, {})
    if dataset is None:
        raise ArgumentError("dataset", "dataset: a model given by its spec needs the data to evaluate it on: a "
                                       "dataset name, a tensor file (.pt / .npz with x, y) or an image folder")
    ds = get_dataset(dataset, split, data_root, num_classes=num_classes)
    channels = int(ds.input_shape[0])
    if normalize is not None:
        normalize = check_normalize(normalize, channels)
    model, source = load_external_model(spec, weights, model_kwargs, normalize, device)
    x = ds[0][0].to(device)
    width = output_width(model, x)
    if num_classes is not None and num_classes != width:
        raise ArgumentError("num_classes", f"num_classes: the model gives {width} logits per input, not {num_classes}")
    if ds.num_classes > width:
        raise ArgumentError("dataset", f"dataset: {ds.name!r} has {ds.num_classes} classes but the model gives "
                                       f"{width} logits")
    ds.num_classes = width
    config = {"arch": spec, "num_classes": width, "input_shape": [int(s) for s in ds.input_shape], "sigma": None,
              "dataset": ds.name, "data_root": data_root, "method": None, "model_kwargs": source["model_kwargs"]}
    meta = {"model": spec, "config": config, "model_source": source}
    from .runs.loading import _PROVENANCE  # the loaders' provenance table: certify_dataset records it

    _PROVENANCE[model] = meta
    return Classifier(model, config, ds, meta)


__all__ = ["Classifier", "load_classifier"]
