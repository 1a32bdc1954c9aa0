"""Your own data as a dataset: a tensor file or an image folder, named by its path wherever a
dataset name goes (``get_dataset(PATH)``, ``--dataset PATH``).

* **A tensor file** ``.pt`` / ``.pth`` (``torch.save`` of a dict, loaded with
  ``weights_only=True``) or ``.npz`` (``numpy.savez``) holding ``x`` and ``y`` -- the same data for
  any split -- or ``x_train``, ``y_train``, ``x_test``, ``y_test`` (one pair per split).
  ``x``: images (N, C, H, W), or (N, H, W) for one channel, or channels-last (N, H, W, C) with C
  1 or 3; float pixels in [0, 1], or uint8 (divided by 255). ``y``: N integer labels >= 0.
  An optional ``num_classes`` entry says how many classes there are (else the largest label + 1).
* **An image folder**: one sub-folder per class (sorted names: label 0, 1, ...), images in them
  (png, jpg, jpeg, bmp, gif, webp, tif); with ``train/`` and ``test/`` (or ``val/``) sub-folders,
  the one of the split. Read with Pillow (no torchvision), lazily, as RGB -- or one channel when
  every image is grayscale -- in [0, 1]; all images of one size.

Each loader's ``name`` is the path as given (recorded in logs' metadata: a resume with other data
is refused), ``mean``/``std`` 0 and 1 (a model normalises itself, or gets ``--normalize``),
``default_arch`` empty (``train`` then needs ``--arch``). Errors are one-line ``ArgumentError``\\ s
naming ``dataset``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..validation import ArgumentError
from . import ImageDataset, TensorImageDataset

TENSOR_SUFFIXES = (".pt", ".pth", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def is_data_path(name: str) -> bool:
    """Whether a dataset ``name`` is a path to data (a tensor file or a folder), not a registered name."""
    p = Path(name)
    return p.suffix.lower() in TENSOR_SUFFIXES or p.is_dir() or os.sep in name or name.startswith(".")


def _bad(path: str | Path, why: str) -> ArgumentError:
    return ArgumentError("dataset", f"dataset: {str(path)!r} {why}")


# -- tensor files ------------------------------------------------------------------------------------
def _read_tensor_file(path: Path) -> dict[str, Any]:
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001  (not a zip, object arrays, ...)
            raise _bad(path, f"is not a readable .npz file ({type(e).__name__}: {str(e)[:80]})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise _bad(path, f"cannot be loaded with weights_only=True ({type(e).__name__}); save a dict of tensors "
                         "{'x': ..., 'y': ...}") from None
    if not isinstance(obj, dict):
        raise _bad(path, f"holds a {type(obj).__name__}; save a dict of tensors {{'x': ..., 'y': ...}}")
    return obj


def _images(x: Any, path: Path) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)  # channels-last (N, H, W, C)
    if x.dim() != 4 or x.shape[0] == 0:
        raise _bad(path, f"x has shape {tuple(x.shape)}; images must be (N, C, H, W), (N, H, W) or (N, H, W, C)")
    if x.dtype == torch.uint8:
        return x.float().div(255.0).contiguous()
    if not x.is_floating_point():
        raise _bad(path, f"x has dtype {x.dtype}; give float pixels in [0, 1] or uint8")
    x = x.float()
    if not torch.isfinite(x).all():
        raise _bad(path, "x holds non-finite values (NaN or inf)")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise _bad(path, f"x has pixels in [{lo:.4g}, {hi:.4g}]; pixels must be in [0, 1] (divide uint8 by 255; "
                         "normalisation belongs to the model: --normalize)")
    return x.contiguous()


def _labels(y: Any, n: int, path: Path) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
    if y.dim() != 1 or len(y) != n:
        raise _bad(path, f"y has shape {tuple(y.shape)}; give one label per image ({n})")
    if y.is_floating_point() or y.dtype == torch.bool:
        if y.dtype == torch.bool or not torch.equal(y, y.round()):
            raise _bad(path, f"y has dtype {y.dtype}; labels must be integers")
    y = y.long()
    if len(y) and int(y.min()) < 0:
        raise _bad(path, f"y holds a negative label ({int(y.min())}); labels are 0, 1, ...")
    return y


def load_tensor_file(path: str | os.PathLike, split: str = "test", num_classes: int | None = None
                     ) -> TensorImageDataset:
    """A tensor file as a dataset (see the module doc); ``num_classes`` overrides the file's count."""
    p = Path(path)
    if not p.is_file():
        raise _bad(path, "does not exist" if not p.exists() else "is not a file")
    data = _read_tensor_file(p)
    keys = ("x", "y") if "x" in data or "y" in data else (f"x_{split}", f"y_{split}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise _bad(path, f"has no {', '.join(missing)} (it holds {', '.join(sorted(map(str, data))) or 'nothing'}); "
                         "give x and y, or x_train, y_train, x_test, y_test")
    x = _images(data[keys[0]], p)
    y = _labels(data[keys[1]], len(x), p)
    stored = data.get("num_classes")
    k = num_classes if num_classes is not None else (int(np.asarray(stored)) if stored is not None
                                                     else int(y.max()) + 1)
    if k < 2 or int(y.max()) >= k:
        raise _bad(path, f"has labels up to {int(y.max())} but num_classes is {k}" if k >= 2
                   else f"has {k} class; a classifier needs at least 2 (give num_classes)")
    c = x.shape[1]
    return TensorImageDataset(x, y, name=str(path), num_classes=k, mean=(0.0,) * c, std=(1.0,) * c, default_arch="")


# -- image folders -----------------------------------------------------------------------------------
def _pil() -> Any:
    try:
        from PIL import Image
    except Exception as e:  # noqa: BLE001
        raise ArgumentError("dataset", f"dataset: an image folder is read with Pillow, which is not installed "
                                       f"({type(e).__name__}); pip install pillow, or save the images as a tensor "
                                       "file (.pt / .npz with x, y)") from None
    return Image


class ImageFolderDataset(ImageDataset):
    """Images in ``root/CLASS/*``, read on access with Pillow (see the module doc)."""

    def __init__(self, root: str | os.PathLike, name: str | None = None, num_classes: int | None = None):
        self.Image = _pil()
        self.root = Path(root)
        classes = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise _bad(root, "holds no class folders; an image folder has one sub-folder of images per class")
        self.classes = classes
        self.files: list[tuple[Path, int]] = []
        for label, c in enumerate(classes):
            self.files += [(f, label) for f in sorted((self.root / c).iterdir())
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        if not self.files:
            raise _bad(root, f"has class folders ({', '.join(classes[:3])}{' ...' if len(classes) > 3 else ''}) but no "
                             f"images ({', '.join(IMAGE_SUFFIXES)})")
        if num_classes is not None and num_classes < len(classes):
            raise _bad(root, f"has {len(classes)} class folders but num_classes is {num_classes}")
        modes, sizes = set(), set()
        for f, _ in self.files[:1] + self.files[-1:]:
            with self._open(f) as im:
                modes.add(im.mode)
                sizes.add(im.size)
        if len(sizes) > 1:
            (w1, h1), (w2, h2) = sorted(sizes)[:2]
            raise _bad(root, f"holds images of different sizes ({w1}x{h1}, {w2}x{h2}); resize them to one size")
        self.mode = "L" if modes <= {"L", "1", "I;16", "I"} else "RGB"
        self.size = next(iter(sizes))
        w, h = self.size
        self.name, self.num_classes = name or str(root), num_classes or len(classes)
        c = 1 if self.mode == "L" else 3
        self.input_shape = (c, h, w)
        self.mean, self.std, self.default_arch, self.train_augment = (0.0,) * c, (1.0,) * c, "", "none"

    def _open(self, f: Path) -> Any:
        try:
            return self.Image.open(f)
        except Exception as e:  # noqa: BLE001
            raise _bad(f, f"is not a readable image ({type(e).__name__})") from None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        f, label = self.files[i]
        with self._open(f) as im:
            if im.size != self.size:
                raise _bad(f, f"is {im.size[0]}x{im.size[1]}, the folder's images are {self.size[0]}x{self.size[1]}; "
                              "resize them to one size")
            a = np.asarray(im.convert(self.mode), dtype=np.uint8)
        x = torch.from_numpy(a.copy()).float().div_(255.0)
        return (x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1).contiguous()), label


def load_image_folder(path: str | os.PathLike, split: str = "test", num_classes: int | None = None
                      ) -> ImageFolderDataset:
    """An image folder as a dataset (see the module doc)."""
    p = Path(path)
    if not p.is_dir():
        raise _bad(path, "does not exist" if not p.exists() else "is not a folder")
    names = {d.name for d in p.iterdir() if d.is_dir()}
    sub = next((s for s in ((split,) if split == "train" else ("test", "val")) if s in names), None)
    if sub is None and names & {"train", "test", "val"}:
        raise _bad(path, f"has {', '.join(sorted(names & {'train', 'test', 'val'}))}/ but no folder for split "
                         f"{split!r}")
    return ImageFolderDataset(p / sub if sub else p, name=str(path), num_classes=num_classes)


def load_data_path(path: str | os.PathLike, split: str = "test", num_classes: int | None = None) -> ImageDataset:
    """A tensor file or an image folder (see the module doc) as a dataset."""
    p = Path(path)
    if p.is_dir():
        return load_image_folder(p, split, num_classes)
    if p.suffix.lower() in TENSOR_SUFFIXES:
        return load_tensor_file(p, split, num_classes)
    raise _bad(path, "does not exist" if not p.exists() else
               f"is neither a tensor file ({', '.join(TENSOR_SUFFIXES)}) nor an image folder")


__all__ = ["IMAGE_SUFFIXES", "ImageFolderDataset", "TENSOR_SUFFIXES", "is_data_path", "load_data_path",
           "load_image_folder", "load_tensor_file"]
