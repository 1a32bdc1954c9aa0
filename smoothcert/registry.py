"""One registry class for everything looked up by name: models, methods, datasets, augmentations,
noises, corruptions and AugMix operations.

A ``Registry`` maps names to objects (builders, classes, dataset entries, callables). Entries
join with the ``register`` decorator (or ``add``); a name registered twice is an error, whatever
the object. Lookups go through ``get``: an unknown name raises ``ArgumentError`` naming the
argument the user gave (``arch``, ``method``, ``dataset``, ``augment``, ``noise``, ...) and listing
the choices, so the CLI maps it to its flag like any other bad argument. Names are listed sorted,
or in registration order for a registry made with ``ordered=True`` (a table whose order is part
of the results: the corruption benchmark's columns, the AugMix operations a seeded draw indexes).

Modules that register entries can be imported lazily (``modules``): the first lookup imports
them, and a module whose optional dependency is missing is skipped, so that it breaks only its
own entries.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, Sequence, TypeVar

from .validation import ArgumentError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects of one ``kind`` ("model", "method", ...); ``arg`` is the library argument
    that names an entry (the ``ArgumentError``'s ``arg`` for an unknown name); ``ordered``: list
    names in registration order instead of sorted."""

    def __init__(self, kind: str, arg: str, modules: Sequence[str] = (), package: str | None = None, *,
                 ordered: bool = False):
        self.kind = kind
        self.arg = arg
        self.ordered = bool(ordered)
        self._entries: dict[str, T] = {}
        self._modules = tuple(modules)
        self._package = package
        self._loaded = not self._modules

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name``; ValueError if the name is taken."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` adds the decorated object under ``name``."""

        def deco(obj: T) -> T:
            return self.add(name, obj)

        return deco

    def remove(self, name: str) -> T:
        """Take ``name`` out again (plugins and tests that register temporary entries)."""
        self._load()
        if name not in self._entries:
            raise KeyError(name)
        return self._entries.pop(name)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self._modules:
            full = f"{self._package}.{mod}" if self._package else mod
            try:
                importlib.import_module(full)
            except ModuleNotFoundError as e:  # an optional dependency is missing: only this module's entries go
                if e.name == full:
                    raise

    def get(self, name: str) -> T:
        """The entry ``name``; ``ArgumentError(arg)`` listing the choices if there is none."""
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ArgumentError(self.arg, f"{self.arg}: unknown {self.kind} {name!r}; choose from "
                                          f"{', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """The registered names, sorted (in registration order if ``ordered``)."""
        self._load()
        return list(self._entries) if self.ordered else sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


__all__ = ["Registry"]
