"""Dataset registry. ``get_dataset(name, split, root)`` returns an ``ImageDataset``: a torch
Dataset of (image, label) with pixels in [0, 1], plus what training and certification need
(``num_classes``, ``input_shape``, ``mean``/``std`` for the model's NormalizeLayer,
``default_arch``, ``train_augment``).

Registered: digits (scikit-learn's bundled 8x8 digits, fixed seeded split: the offline default),
mnist (IDX files), cifar10, cifar100 (python-pickle archives), svhn (.mat files), imagenet (an
image folder, needs torchvision) and synthetic (deterministic Gaussian blobs, for tests). Any
other data by its path: a tensor file (.pt / .npz with x, y) or an image folder (one sub-folder
per class), ``smoothcert.data.external``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.data import Dataset

from ..registry import Registry
from ..validation import ArgumentError

SPLITS = ("train", "test")


class ImageDataset(Dataset):
    """Base class: subclasses set the metadata below and implement __len__/__getitem__."""

    name: str = ""
    split: str | None = None  # "train"/"test" when loaded by get_dataset
    num_classes: int = 0
    input_shape: tuple[int, int, int] = (0, 0, 0)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    default_arch: str = ""
    train_augment: str = "none"  # batched train-time augmentation the Trainer applies: none|crop-flip


class TensorImageDataset(ImageDataset):
    """An in-memory dataset: ``x`` (N, C, H, W) float32 in [0, 1], ``y`` (N,) int64."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, name: str, num_classes: int,
                 mean: tuple[float, ...], std: tuple[float, ...], default_arch: str,
                 train_augment: str = "none"):
        if x.dim() != 4 or len(x) != len(y):
            raise ValueError(f"x must be (N, C, H, W) with one label each, got {tuple(x.shape)} and {tuple(y.shape)}")
        self.x, self.y = x.contiguous(), y.long()
        self.name, self.num_classes = name, num_classes
        self.input_shape = tuple(x.shape[1:])  # type: ignore[assignment]
        self.mean, self.std, self.default_arch, self.train_augment = mean, std, default_arch, train_augment

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


@dataclass(frozen=True)
class DatasetEntry:
    loader: Callable[..., ImageDataset]
    needs_root: bool
    help: str


DATASETS: Registry[DatasetEntry] = Registry("dataset", "dataset")


def register_dataset(name: str, needs_root: bool, help: str) -> Callable[[Callable[..., ImageDataset]], Callable[..., ImageDataset]]:
    """Decorator: register a loader ``fn(split, root, download) -> ImageDataset`` under ``name``."""

    def deco(fn: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        DATASETS.add(name, DatasetEntry(fn, needs_root, help))
        return fn

    return deco


def list_datasets() -> list[str]:
    return DATASETS.names()


def get_dataset(name: str, split: str = "test", root: str | None = None, download: bool = False,
                num_classes: int | None = None) -> ImageDataset:
    """Load dataset ``name`` (``split`` in {train, test}); ValueError with a one-line reason if
    the name is unknown or the files are missing (saying which files to put where). ``name`` may
    also be the path of a tensor file or an image folder (``data.external``; ``num_classes``
    then overrides the count it infers)."""
    if split not in SPLITS:
        raise ArgumentError("split", f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if name not in DATASETS:
        from .external import is_data_path, load_data_path

        if is_data_path(name):
            ds = load_data_path(name, split, num_classes)
            ds.split = split
            return ds
    if num_classes is not None:
        raise ArgumentError("num_classes", f"num_classes: dataset {name!r} knows its classes; num_classes is for a "
                                           "tensor file or an image folder")
    entry = DATASETS.get(name)
    if entry.needs_root and root is None:
        raise ArgumentError("data_root", f"data_root: dataset {name!r} needs a data root: {entry.help}")
    ds = entry.loader(split=split, root=root, download=download)
    ds.split = split  # recorded in certify logs' metadata
    return ds


from . import files, sklearn_digits, synthetic  # noqa: E402,F401  (register loaders)

__all__ = ["DATASETS", "DatasetEntry", "ImageDataset", "TensorImageDataset", "get_dataset", "list_datasets", "register_dataset"]
