"""Any model as a base classifier: your own ``nn.Module`` from a file or a package, a TorchScript or
``torch.export`` file, a timm or torchvision architecture -- with your weights and, where the model
expects normalised inputs, its normalisation as the first layer.

``load_external_model(spec, weights=None, model_kwargs=None, normalize=None)`` returns
``(model, source)``: the model in eval mode and a JSON-able description of where it came from
(``source``: the spec, its kind, the keyword arguments, the weights file and its SHA-256, the
normalisation), which the certify/predict/attack metadata records (``meta={"model": spec,
"model_source": source}``; the weights themselves are fingerprinted by the runner's
``model_sha256``, so a resume with other weights is refused).

``spec`` is one of

=============================  ===============================================================
``FILE.py:NAME``               ``NAME`` in the Python file (a class or a function returning an
                               ``nn.Module``), called with ``model_kwargs``
``package.module:NAME``        the same from an importable module (``NAME`` may be dotted)
``timm:NAME``                  ``timm.create_model(NAME, **model_kwargs)`` (needs timm)
``torchvision:NAME``           ``torchvision.models.get_model(NAME, **model_kwargs)``
``FILE.pt`` / ``.pth`` ...     a TorchScript archive (``torch.jit.save``)
``FILE.pt2``                   a ``torch.export`` archive (``torch.export.save``)
=============================  ===============================================================

``weights``: a state dict file, loaded with ``torch.load(weights_only=True)`` (a dict of tensors,
or a checkpoint dict holding one under ``state_dict`` or ``model``; a ``module.`` prefix of
DataParallel is dropped). Keys or shapes that do not match the model are an error listing a
few of them.

``normalize``: ``(mean, std)``, one number per input channel; the model becomes
``nn.Sequential(NormalizeLayer(mean, std), model)``, so pixels stay in [0, 1] -- noise, attacks
and radii live in pixel space -- and the model sees ``(x - mean) / std``. Give it when your
model was trained on normalised inputs and does not normalise itself. ``parse_normalize``
reads the CLI's ``--normalize`` (``m1,...,mC,s1,...,sC`` or a preset name).

Every user error is an ``ArgumentError`` naming the argument (``model``, ``weights``,
``model_kwargs``, ``normalize``), in one line.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import math
import os
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..validation import ArgumentError
from .normalize import NormalizeLayer

SPEC_HELP = ("FILE.py:NAME, package.module:NAME, timm:NAME, torchvision:NAME, a TorchScript file or a "
             "torch.export .pt2 file")
# --normalize presets: the usual per-channel statistics
NORMALIZE_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ((0.1307,), (0.3081,)),
}
_SHOWN_KEYS = 3  # keys listed when weights do not fit


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_model_kwargs(text: str | None) -> dict[str, Any]:
    """``--model-kwargs``: a JSON object (``'{"depth": 20, "width": 2}'``); {} for None.
    ArgumentError("model_kwargs") for bad JSON or another JSON value."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArgumentError("model_kwargs", f"model_kwargs: {text[:60]!r} is not valid JSON ({e.msg} at column "
                                            f"{e.colno}); give an object, e.g. '{{\"depth\": 20}}'") from None
    if not isinstance(value, dict):
        raise ArgumentError("model_kwargs", f"model_kwargs must be a JSON object of keyword arguments, got "
                                            f"{type(value).__name__} {text[:40]!r}")
    return value


def parse_normalize(text: str | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``--normalize``: ``MEAN,STD`` for one channel, ``m1,...,mC,s1,...,sC`` for C channels (the
    means, then the stds), or a preset (``imagenet``, ``cifar10``, ``cifar100``, ``mnist``).
    None for None. ArgumentError("normalize") otherwise."""
    if text is None:
        return None
    key = text.strip().lower()
    if key in NORMALIZE_PRESETS:
        return NORMALIZE_PRESETS[key]
    try:
        values = [float(p) for p in text.split(",")]
    except ValueError:
        raise ArgumentError("normalize", f"normalize: {text!r} is neither MEAN,STD numbers (m1,...,mC,s1,...,sC) "
                                         f"nor a preset ({', '.join(NORMALIZE_PRESETS)})") from None
    if len(values) % 2:
        raise ArgumentError("normalize", f"normalize: {text!r} has {len(values)} numbers; give the C means then the "
                                         "C stds (an even count, e.g. 0.5,0.25 for one channel)")
    c = len(values) // 2
    return check_normalize((values[:c], values[c:]))


def check_normalize(normalize: Any, channels: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` as tuples of floats, one per channel (``channels``, where known); finite
    means, finite stds > 0. ArgumentError("normalize") naming what is wrong."""
    try:
        mean, std = normalize
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise ArgumentError("normalize", f"normalize must be (mean, std), two sequences of numbers, got "
                                         f"{normalize!r}") from None
    if len(mean) != len(std) or not mean:
        raise ArgumentError("normalize", f"normalize: {len(mean)} means but {len(std)} stds; give one of each per "
                                         "channel")
    if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(s) and s > 0 for s in std):
        raise ArgumentError("normalize", f"normalize: means must be finite and stds finite and > 0, got mean "
                                         f"{list(mean)}, std {list(std)}")
    if channels is not None and len(mean) != channels:
        raise ArgumentError("normalize", f"normalize: {len(mean)} means and {len(std)} stds, but the inputs have "
                                         f"{channels} channel{'s' if channels != 1 else ''}")
    return mean, std


# -- spec -> module ------------------------------------------------------------------------------
def _kind(spec: str) -> str:
    if spec.startswith(("timm:", "torchvision:")):
        return spec.split(":", 1)[0]
    left, sep, _ = spec.rpartition(":")
    if sep and left.endswith(".py"):
        return "file"
    if sep and left and all(part.isidentifier() for part in left.split(".")):
        return "module"
    if spec.endswith(".pt2"):
        return "export"
    return "torchscript"


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ArgumentError("model", f"model: {str(path)!r} does not exist" if not path.exists()
                            else f"model: {str(path)!r} is not a file")
    name = f"smoothcert_user_model_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ArgumentError("model", f"model: cannot import {str(path)!r} as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses, pickling and relative lookups want it there
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001  (a user file may raise anything while importing)
        sys.modules.pop(name, None)
        raise ArgumentError("model", f"model: importing {str(path)!r} failed: {type(e).__name__}: "
                                     f"{_one_line(e)}") from None
    return module


def _one_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0][:200]


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        missing = e.name or name
        raise ArgumentError("model", f"model: cannot import {name!r} (no module named {missing!r}); give "
                                     "package.module:NAME importable from here, or FILE.py:NAME") from None
    except Exception as e:  # noqa: BLE001
        raise ArgumentError("model", f"model: importing {name!r} failed: {type(e).__name__}: {_one_line(e)}") from None


def _attribute(module: Any, name: str, where: str) -> Any:
    obj = module
    for part in name.split("."):
        if not hasattr(obj, part):
            public = sorted(k for k, v in vars(module).items()
                            if not k.startswith("_") and (isinstance(v, type) or callable(v)))
            shown = ", ".join(public[:8]) + (" ..." if len(public) > 8 else "")
            raise ArgumentError("model", f"model: {where} has no {name!r} (it defines {shown or 'nothing callable'})")
        obj = getattr(obj, part)
    return obj


def _call(factory: Any, kwargs: dict[str, Any], what: str) -> nn.Module:
    if isinstance(factory, nn.Module):
        if kwargs:
            raise ArgumentError("model_kwargs", f"model_kwargs: {what} is a module instance, not a class or "
                                                "function: it takes no keyword arguments")
        return factory
    if not callable(factory):
        raise ArgumentError("model", f"model: {what} is a {type(factory).__name__}, not a class or a function "
                                     "returning an nn.Module")
    try:
        model = factory(**kwargs)
    except TypeError as e:
        raise ArgumentError("model_kwargs", f"model_kwargs: {what}({', '.join(f'{k}=...' for k in kwargs)}) "
                                            f"failed: {_one_line(e)}") from None
    except Exception as e:  # noqa: BLE001
        raise ArgumentError("model", f"model: {what}(...) failed: {type(e).__name__}: {_one_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise ArgumentError("model", f"model: {what} returned a {type(model).__name__}, not an nn.Module")
    return model


def _from_package(package: str, name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        if package == "timm":
            import timm  # optional
            factory = lambda **kw: timm.create_model(name, **kw)  # noqa: E731
            known = name in timm.list_models()
        else:
            import torchvision.models as tvm  # optional
            factory = lambda **kw: tvm.get_model(name, **kw)  # noqa: E731
            known = name.lower() in tvm.list_models()
    except Exception as e:  # noqa: BLE001  (ImportError, or a build for another torch)
        pip = "timm" if package == "timm" else "torchvision"
        raise ArgumentError("model", f"model: {package}:{name} needs the {pip} package ({type(e).__name__}: "
                                     f"{_one_line(e)}); pip install {pip}") from None
    if not known:
        raise ArgumentError("model", f"model: {package} has no model {name!r}")
    return _call(factory, kwargs, f"{package}:{name}")


def _load_archive(path: Path, kind: str, device: torch.device) -> nn.Module:
    if not path.is_file():
        raise ArgumentError("model", f"model: {str(path)!r} does not exist; give {SPEC_HELP}" if not path.exists()
                            else f"model: {str(path)!r} is not a file; give {SPEC_HELP}")
    if kind == "export":
        try:
            return _Exported(torch.export.load(str(path)).module())
        except Exception as e:  # noqa: BLE001
            raise ArgumentError("model", f"model: {str(path)!r} is not a torch.export archive ({type(e).__name__}: "
                                         f"{_one_line(e)})") from None
    if not zipfile.is_zipfile(path) or not any(n.split("/", 2)[1:2] == ["code"]
                                               for n in zipfile.ZipFile(path).namelist()):
        raise ArgumentError("model", f"model: {str(path)!r} is not a TorchScript file (a checkpoint of weights? give "
                                     "the model as FILE.py:NAME or package.module:NAME and the file as --weights)")
    try:
        return torch.jit.load(str(path), map_location=device)
    except Exception as e:  # noqa: BLE001
        raise ArgumentError("model", f"model: cannot load TorchScript {str(path)!r} ({type(e).__name__}: "
                                     f"{_one_line(e)})") from None


class _Exported(nn.Module):
    """A ``torch.export`` program as a module: its train/eval behaviour was fixed when it was
    exported, so ``train()``/``eval()`` (which the program's module refuses) only set the flag."""

    def __init__(self, program: nn.Module):
        super().__init__()
        self.program = program

    def train(self, mode: bool = True) -> "_Exported":
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


def _state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    from ..logs import safe_torch_load

    try:
        obj = safe_torch_load(path)
    except ValueError as e:
        raise ArgumentError("weights", f"weights: {_one_line(e)}") from None
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in ("state_dict", "model", "model_state_dict") if isinstance(obj.get(k), Mapping)),
                     None)
        obj = inner if inner is not None else obj
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ArgumentError("weights", f"weights: {str(path)!r} is not a state dict (a mapping of names to tensors, "
                                       "or a checkpoint holding one under state_dict or model)")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _shown(keys: Sequence[str]) -> str:
    return ", ".join(keys[:_SHOWN_KEYS]) + (f" (and {len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


def load_weights_into(model: nn.Module, path: str | os.PathLike) -> None:
    """Load the state dict file ``path`` into ``model`` (strict). ArgumentError("weights")
    listing a few missing and unexpected keys, or the first tensor of another shape."""
    path = Path(path)
    sd = _state_dict(path)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        parts = ([f"missing {_shown(missing)}"] if missing else []) + \
                ([f"unexpected {_shown(unexpected)}"] if unexpected else [])
        raise ArgumentError("weights", f"weights: {str(path)!r} does not match the model: {'; '.join(parts)}")
    for key, v in sorted(sd.items()):
        if tuple(v.shape) != tuple(own[key].shape):
            raise ArgumentError("weights", f"weights: {str(path)!r} does not match the model: {key} has shape "
                                           f"{tuple(v.shape)}, the model expects {tuple(own[key].shape)}")
    model.load_state_dict(sd, strict=True)


def load_external_model(spec: str, weights: str | os.PathLike | None = None,
                        model_kwargs: dict[str, Any] | None = None,
                        normalize: Sequence[Sequence[float]] | None = None,
                        device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model ``spec`` names (see the module doc), with ``weights`` loaded and ``normalize``
    as its first layer, in eval mode on ``device``; and its ``source`` description."""
    if not isinstance(spec, str) or not spec.strip():
        raise ArgumentError("model", f"model must be {SPEC_HELP}, got {spec!r}")
    spec = spec.strip()
    kwargs = dict(model_kwargs or {})
    if not isinstance(model_kwargs or {}, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise ArgumentError("model_kwargs", f"model_kwargs must be a mapping of keyword arguments, got "
                                            f"{type(model_kwargs).__name__}")
    norm = None if normalize is None else check_normalize(normalize)
    device = torch.device(device)
    kind = _kind(spec)
    if kind in ("timm", "torchvision"):
        model = _from_package(kind, spec.split(":", 1)[1], kwargs)
    elif kind in ("file", "module"):
        where, _, name = spec.rpartition(":")
        if not name:
            raise ArgumentError("model", f"model: {spec!r} names no class or function after ':' (give {where}:NAME)")
        module = _import_file(Path(where)) if kind == "file" else _import_module(where)
        model = _call(_attribute(module, name, repr(where)), kwargs, f"{where}:{name}")
    else:
        if kwargs:
            raise ArgumentError("model_kwargs", f"model_kwargs: {spec!r} is a saved {kind} model; it takes no "
                                                "keyword arguments")
        model = _load_archive(Path(spec), kind, device)
    source: dict[str, Any] = {"spec": spec, "kind": kind, "model_kwargs": kwargs}
    if kind in ("torchscript", "export"):
        source["file_sha256"] = file_sha256(spec)
    if weights is not None:
        if kind in ("torchscript", "export"):
            raise ArgumentError("weights", f"weights: {spec!r} is a saved {kind} model and holds its own weights")
        load_weights_into(model, weights)
        source.update({"weights": str(weights), "weights_sha256": file_sha256(weights)})
    if norm is not None:
        model = nn.Sequential(NormalizeLayer(*norm), model)
        source["normalize"] = {"mean": list(norm[0]), "std": list(norm[1])}
    return model.to(device).eval(), source


def output_width(model: nn.Module, x: torch.Tensor) -> int:
    """The number of logits ``model`` gives for one input ``x`` (C, H, W): the class count.
    ArgumentError("model") when the forward pass fails or does not give (1, K) logits."""
    try:
        with torch.no_grad():
            out = model(x.unsqueeze(0))
    except Exception as e:  # noqa: BLE001
        raise ArgumentError("model", f"model: the forward pass on an input of shape {tuple(x.shape)} failed: "
                                     f"{type(e).__name__}: {_one_line(e)}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1 or out.shape[1] < 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ArgumentError("model", f"model: gives {shape} for one input; a classifier must give (1, K) logits, "
                                     "K >= 2")
    return int(out.shape[1])


__all__ = ["NORMALIZE_PRESETS", "SPEC_HELP", "check_normalize", "file_sha256", "load_external_model",
           "load_weights_into", "output_width", "parse_model_kwargs", "parse_normalize"]
