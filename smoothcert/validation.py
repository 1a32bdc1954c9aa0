"""Argument checks shared by the library: each raises ValueError naming the bad argument."""
from __future__ import annotations

import math
from typing import Any


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int; ValueError naming ``name`` if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(name: str, value: Any, lo: float, hi: float = math.inf, lo_open: bool = False,
                hi_open: bool = False) -> float:
    """``value`` as a float; ValueError naming ``name`` unless it is finite and in the interval."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        rng = (f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}" if math.isfinite(hi)
               else f"{'>' if lo_open else '>='} {lo:g}")
        raise ValueError(f"{name} must be {'in ' if math.isfinite(hi) else ''}{rng}, got {value!r}")
    return float(value)


def check_sigma(value: Any, positive: bool = False) -> float:
    """``value`` as a float; ValueError unless it is a finite number >= 0 (> 0 with ``positive``)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise ValueError(f"sigma must be a finite number {'>' if positive else '>='} 0, got {value!r}")
    return float(value)
