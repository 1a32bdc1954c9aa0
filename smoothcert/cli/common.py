"""Pieces every command shares: library errors as one-line usage errors, device selection."""
from __future__ import annotations

from functools import wraps
from typing import Any, Callable

import click
import torch


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's ValueError into click's one-line usage error (exit status 2)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValueError as e:
            raise click.UsageError(str(e).splitlines()[0] if str(e) else "invalid input") from None

    return wrapper


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise click.BadParameter(f"unknown device {device!r}", param_hint="--device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine", param_hint="--device")
    return dev
