"""Argument checks shared by the library: each raises ``ArgumentError`` (a ValueError) naming the
bad argument, so that the CLI can map it to its flag in one place (``cli/common.py``)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any


class ArgumentError(ValueError):
    """A bad argument: a ValueError whose ``arg`` is the library argument's name (``"alpha"``,
    ``"n0"``, ...). The message is one line and starts with that name."""

    def __init__(self, arg: str, message: str):
        super().__init__(message)
        self.arg = arg


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int; ValueError naming ``name`` if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < minimum:
        raise ArgumentError(name, f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(name: str, value: Any, lo: float, hi: float = math.inf, lo_open: bool = False,
                hi_open: bool = False) -> float:
    """``value`` as a float; ValueError naming ``name`` unless it is finite and in the interval."""
    if not isinstance(value, bool) and isinstance(value, (int, float)) and not math.isfinite(value):
        raise ArgumentError(name, f"{name} must be a finite number, got {value!r}")
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        rng = (f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}" if math.isfinite(hi)
               else f"{'>' if lo_open else '>='} {lo:g}")
        raise ArgumentError(name, f"{name} must be {'in ' if math.isfinite(hi) else ''}{rng}, got {value!r}")
    return float(value)


def check_sigma(value: Any, positive: bool = False) -> float:
    """``value`` as a float; ArgumentError unless it is a finite real number >= 0 (> 0 with
    ``positive``); bools and strings are refused."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise ArgumentError("sigma", f"sigma must be a finite number {'>' if positive else '>='} 0, got {value!r}")
    return float(value)


def check_alpha(value: Any) -> float:
    """The failure probability ``alpha`` as a float in (0, 1)."""
    return check_float("alpha", value, 0.0, 1.0, lo_open=True, hi_open=True)


def check_output(name: str, path: Any) -> Path:
    """``path`` as a Path for a file to write: ArgumentError naming ``name`` if its folder does not
    exist or cannot be written, or if the path is itself a folder -- checked before any work."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ArgumentError(name, f"{name} must be a file path, got {path!r}")
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise ArgumentError(name, f"{name}: folder {str(parent)!r} does not exist")
    if path.is_dir():
        raise ArgumentError(name, f"{name}: {str(path)!r} is a folder, not a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ArgumentError(name, f"{name}: folder {str(parent)!r} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise ArgumentError(name, f"{name}: {str(path)!r} is not writable")
    return path
