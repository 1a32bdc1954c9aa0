"""Compatibility module: the run directory lives in ``smoothcert.runs.directory`` (``RunDir``,
``validate_config``, ``build_model``, ...); this name is kept so that existing imports
(``from smoothcert.rundir import RunDir``) keep working. New code imports from ``smoothcert.runs``.
"""
from __future__ import annotations

from typing import Any

from .runs import directory as _directory
from .runs.directory import *  # noqa: F401,F403
from .runs.directory import __all__  # noqa: F401


def __getattr__(name: str) -> Any:  # the module's other names (helpers) too
    return getattr(_directory, name)
