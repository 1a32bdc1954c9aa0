"""Training methods are objectives: ``loss(model, x, y) -> Tensor`` plus optional epoch hooks.

The Trainer knows nothing of MaxUp or PGD; it only calls ``method.on_epoch_start(epoch,
num_epochs)`` and ``method.loss(model, x, y)``. Methods register with ``@register_method``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..registry import Registry
from ..validation import ArgumentError
from .base import Method, TrainContext

# the modules that define methods are imported at the first lookup (one missing optional
# dependency breaks only that module's methods)
METHODS: Registry[type[Method]] = Registry(
    "method", "method", modules=("gauss", "maxup", "alps", "smoothadv", "augmix", "augmax", "stability", "consistency", "macer",
                               "smoothmix", "catrs", "denoiser", "ddpm"), package=__name__)


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a Method under ``name`` (and set its ``name``)."""

    def deco(cls: type[Method]) -> type[Method]:
        METHODS.add(name, cls)
        cls.name = name
        return cls

    return deco


def list_methods() -> list[str]:
    return METHODS.names()


def create_method(name: str, **params: Any) -> Method:
    """Instantiate method ``name``; ArgumentError("method") listing the choices if it is unknown."""
    return METHODS.get(name)(**params)


@dataclass(frozen=True)
class Hyperparameter:
    """One constructor parameter of a method: its name (as in the paper), the annotation as
    written, and its default (``inspect.Parameter.empty`` when required)."""

    name: str
    annotation: str
    default: Any

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def hyperparameters(method: str) -> list[Hyperparameter]:
    """The hyperparameters of method ``method``, in the constructor's order (one convention for
    every method: its keyword arguments are its hyperparameters)."""
    sig = inspect.signature(METHODS.get(method).__init__)
    return [Hyperparameter(n, p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__",
                                                                                          str(p.annotation)), p.default)
            for n, p in sig.parameters.items()
            if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_value(hp: Hyperparameter, text: str) -> Any:
    """``text`` as a value of ``hp`` by its annotation (bool, int, float, str; "none" where the
    annotation allows None); ArgumentError naming the hyperparameter otherwise."""
    kinds = [k.strip() for k in hp.annotation.split("|")]
    t = text.strip()
    if "None" in kinds and t.lower() == "none":
        return None
    try:
        if "bool" in kinds:
            if t.lower() in _TRUE or t.lower() in _FALSE:
                return t.lower() in _TRUE
            raise ValueError
        if "int" in kinds:
            return int(t)
        if "float" in kinds:
            return float(t)
    except ValueError:
        raise ArgumentError(hp.name, f"{hp.name} must be {' or '.join(k for k in kinds if k != 'None')}, got {text!r}"
                            ) from None
    return t


def parse_params(method: str, items: Sequence[str]) -> dict[str, Any]:
    """``["lbd=20", "eta=0.5"]`` as constructor arguments of ``method`` (``-`` in names read as
    ``_``): ArgumentError("param") for a malformed item, a name the method does not take or a
    name given twice; values converted by ``parse_value``."""
    by_name = {hp.name: hp for hp in hyperparameters(method)}
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ArgumentError("param", f"param: expected NAME=VALUE, got {item!r}")
        if name not in by_name:
            raise ArgumentError("param", f"param: method {method} has no hyperparameter {name!r}; it takes "
                                         f"{', '.join(by_name)}")
        if name in out:
            raise ArgumentError("param", f"param: {name} is given twice")
        out[name] = parse_value(by_name[name], value)
    return out


__all__ = ["METHODS", "Hyperparameter", "Method", "TrainContext", "create_method", "hyperparameters", "list_methods",
           "parse_params", "parse_value", "register_method"]
