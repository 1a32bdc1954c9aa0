"""Datasets read from standard files under ``--data-root``: MNIST (IDX), CIFAR-10/100 (python
pickle archives), SVHN (.mat) and ImageNet (an image folder, via torchvision).

``download=True`` fetches the files with torchvision where it is installed and the machine is
online; otherwise the error says which files to put where.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from . import ImageDataset, TensorImageDataset, register_dataset

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _torchvision_download(cls_name: str, root: str, **kw) -> None:
    try:
        import torchvision.datasets as tvd  # optional: absent on CPU-only machines here
    except Exception as e:  # noqa: BLE001  (ImportError, or a torchvision built for another torch)
        raise ValueError(f"--download needs a working torchvision ({type(e).__name__}); put the files in place instead") from None
    getattr(tvd, cls_name)(root, download=True, **kw)


def _first_existing(root: Path, names: list[str]) -> Path | None:
    for n in names:
        for p in (root / n, root / "mnist" / n, root / "MNIST" / "raw" / n):
            if p.is_file():
                return p
    return None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{str(path)!r} is not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{str(path)!r} is truncated")
    return arr.reshape(shape)


@register_dataset("mnist", needs_root=True,
                  help="put train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
                       "t10k-labels-idx1-ubyte[.gz] in ROOT or ROOT/mnist")
def load_mnist(split: str, root: str | None, download: bool = False) -> TensorImageDataset:
    base = Path(root)  # type: ignore[arg-type]
    prefix = "train" if split == "train" else "t10k"
    names = lambda kind: [f"{prefix}-{kind}", f"{prefix}-{kind}.gz"]  # noqa: E731
    img, lab = _first_existing(base, names("images-idx3-ubyte")), _first_existing(base, names("labels-idx1-ubyte"))
    if (img is None or lab is None) and download:
        _torchvision_download("MNIST", str(base), train=split == "train")
        img, lab = _first_existing(base, names("images-idx3-ubyte")), _first_existing(base, names("labels-idx1-ubyte"))
    if img is None or lab is None:
        raise ValueError(f"MNIST {split} files not found under {str(base)!r}: put {prefix}-images-idx3-ubyte.gz and "
                         f"{prefix}-labels-idx1-ubyte.gz in ROOT or ROOT/mnist")
    x = torch.from_numpy(_read_idx(img).astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(_read_idx(lab).astype(np.int64))
    return TensorImageDataset(x, y, name="mnist", num_classes=10, mean=(0.0,), std=(1.0,), default_arch="lenet")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The CIFAR archives are pickles of dicts of numpy arrays; allow nothing else, so a
    tampered archive cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("copy_reg", "_reconstructor"), ("builtins", "object")}

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset archive")


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        d = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    data = d[b"data"]
    labels = d.get(b"labels", d.get(b"fine_labels"))
    return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _load_cifar(split: str, root: str, download: bool, folder: str, train_files: list[str], test_files: list[str],
                tv_name: str, name: str, num_classes: int, mean: tuple, std: tuple) -> TensorImageDataset:
    base = Path(root) / folder
    files = train_files if split == "train" else test_files
    if not all((base / f).is_file() for f in files) and download:
        _torchvision_download(tv_name, root, train=split == "train")
    missing = [f for f in files if not (base / f).is_file()]
    if missing:
        raise ValueError(f"{name} files not found: extract the python version of the archive so that "
                         f"{str(base / missing[0])!r} exists (or pass --download with torchvision online)")
    parts = [_load_cifar_batch(base / f) for f in files]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0)
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return TensorImageDataset(x, y, name=name, num_classes=num_classes, mean=mean, std=std,
                              default_arch="cifar_resnet110", train_augment="crop-flip")


@register_dataset("cifar10", needs_root=True, help="extract cifar-10-python.tar.gz so that ROOT/cifar-10-batches-py/ exists")
def load_cifar10(split: str, root: str | None, download: bool = False) -> TensorImageDataset:
    return _load_cifar(split, root, download, "cifar-10-batches-py",  # type: ignore[arg-type]
                       [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "CIFAR10", "cifar10", 10,
                       CIFAR10_MEAN, CIFAR10_STD)


@register_dataset("cifar100", needs_root=True, help="extract cifar-100-python.tar.gz so that ROOT/cifar-100-python/ exists")
def load_cifar100(split: str, root: str | None, download: bool = False) -> TensorImageDataset:
    return _load_cifar(split, root, download, "cifar-100-python", ["train"], ["test"],  # type: ignore[arg-type]
                       "CIFAR100", "cifar100", 100, CIFAR100_MEAN, CIFAR100_STD)


@register_dataset("svhn", needs_root=True, help="put train_32x32.mat and test_32x32.mat in ROOT or ROOT/svhn")
def load_svhn(split: str, root: str | None, download: bool = False) -> TensorImageDataset:
    from scipy.io import loadmat

    fname = f"{split}_32x32.mat"
    base = Path(root)  # type: ignore[arg-type]
    path = next((p for p in (base / fname, base / "svhn" / fname) if p.is_file()), None)
    if path is None and download:
        _torchvision_download("SVHN", str(base / "svhn"), split=split)
        path = base / "svhn" / fname if (base / "svhn" / fname).is_file() else None
    if path is None:
        raise ValueError(f"SVHN file {fname} not found under {str(base)!r}: put it in ROOT or ROOT/svhn")
    d = loadmat(path)
    x = torch.from_numpy(np.transpose(d["X"], (3, 2, 0, 1)).astype(np.float32) / 255.0)
    y = torch.from_numpy(d["y"].reshape(-1).astype(np.int64) % 10)  # label 10 means digit 0
    return TensorImageDataset(x, y, name="svhn", num_classes=10, mean=SVHN_MEAN, std=SVHN_STD,
                              default_arch="cifar_resnet20", train_augment="crop-flip")


class _ImageFolderDataset(ImageDataset):
    def __init__(self, folder, num_classes: int):  # noqa: ANN001
        self.folder = folder
        self.name, self.num_classes, self.input_shape = "imagenet", num_classes, (3, 224, 224)
        self.mean, self.std, self.default_arch, self.train_augment = IMAGENET_MEAN, IMAGENET_STD, "resnet50", "none"

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.folder[i]


@register_dataset("imagenet", needs_root=True, help="an ImageFolder tree ROOT/imagenet/{train,val}/CLASS/*.JPEG (needs torchvision)")
def load_imagenet(split: str, root: str | None, download: bool = False) -> ImageDataset:
    try:
        import torchvision.datasets as tvd
        import torchvision.transforms as T
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"imagenet needs a working torchvision ({type(e).__name__}: {str(e)[:80]})") from None
    folder = Path(root) / "imagenet" / ("train" if split == "train" else "val")  # type: ignore[arg-type]
    if not folder.is_dir():
        raise ValueError(f"ImageNet folder {str(folder)!r} not found: ROOT/imagenet/{{train,val}}/CLASS/*.JPEG")
    tf = (T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()]) if split == "train"
          else T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()]))
    ds = tvd.ImageFolder(str(folder), transform=tf)
    return _ImageFolderDataset(ds, len(ds.classes))
