"""Training methods are objectives: ``loss(model, x, y) -> Tensor`` plus optional epoch hooks.

The Trainer knows nothing of MaxUp or PGD; it only calls ``method.on_epoch_start(epoch,
num_epochs)`` and ``method.loss(model, x, y)``. Methods register with ``@register_method``.
"""
from __future__ import annotations

from typing import Any, Callable

from ..registry import Registry
from .base import Method

# the modules that define methods are imported at the first lookup (one missing optional
# dependency breaks only that module's methods)
METHODS: Registry[type[Method]] = Registry(
    "method", "method", modules=("gauss", "maxup", "alps", "smoothadv", "augmix", "augmax"), package=__name__)


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


__all__ = ["METHODS", "Method", "create_method", "list_methods", "register_method"]
