"""Training methods are objectives: ``loss(model, x, y) -> Tensor`` plus optional epoch hooks.

The Trainer knows nothing of MaxUp or PGD; it only calls ``method.on_epoch_start(epoch,
num_epochs)`` and ``method.loss(model, x, y)``. Methods register with ``@register_method``.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from .base import Method

_REGISTRY: dict[str, type[Method]] = {}
# modules that define methods; imported lazily so one missing optional dependency breaks one method only
_MODULES = ("gauss", "maxup", "alps", "smoothadv", "augmix", "augmax")


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def deco(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_all() -> None:
    for mod in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{mod}":
                raise


def list_methods() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def create_method(name: str, **params: Any) -> Method:
    """Instantiate method ``name``; ValueError listing the choices if it is unknown."""
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**params)


__all__ = ["Method", "create_method", "list_methods", "register_method"]
