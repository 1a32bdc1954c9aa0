"""Compatibility module: the resumable logged runner lives in ``smoothcert.runs.logged``
(``run_logged``, ``Selection``, ``RunReport``, ``meta_path``, ``read_meta``, ...); this name is
kept so that existing imports (``from smoothcert.runner import Selection``) keep working. New
code imports from ``smoothcert.runs``.
"""
from __future__ import annotations

from typing import Any

from .runs import logged as _logged
from .runs.logged import *  # noqa: F401,F403
from .runs.logged import __all__  # noqa: F401


def __getattr__(name: str) -> Any:  # the module's other names (helpers, LEGACY_DEFAULTS) too
    return getattr(_logged, name)
