"""What every attack shares: the Lp geometry (norms, steepest-ascent directions, projections onto
eps-balls), ``frozen_eval`` and the ``Attack`` base class that owns mode switching.

During an attack the model is in eval mode and its parameters do not require grad (only the
input gets a gradient); every module's train/eval flag and every parameter's requires_grad are
restored afterwards, also after an error (``frozen_eval``).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import ArgumentError

NORMS = ("linf", "l2")


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ArgumentError("norm", f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return norm


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm of a batch ``delta`` (B, ...): a (B,) tensor."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if check_norm(norm) == "linf" else flat.norm(dim=1)


def _rows(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (B,) tensor shaped to broadcast over the batch ``like`` (B, ...)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit norm: sign(grad) (Linf), grad / ||grad||_2 (L2)."""
    if check_norm(norm) == "linf":
        return grad.sign()
    return grad / _rows(lp_norm(grad, "l2").clamp_min(1e-12), grad)


def project(delta: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Euclidean projection of each row of ``delta`` onto the ``norm`` ball of radius ``eps`` (B,)."""
    e = _rows(eps.to(delta.dtype), delta)
    if check_norm(norm) == "linf":
        return torch.maximum(torch.minimum(delta, e), -e)
    n = _rows(lp_norm(delta, "l2").clamp_min(1e-12), delta)
    return delta * (e / n).clamp(max=1.0)


@contextmanager
def frozen_eval(model: Any) -> Iterator[Any]:
    """Inside the block: eval mode, parameters with requires_grad=False. On exit every module's
    train/eval flag and every parameter's requires_grad are restored (also after an error).
    A plain callable passes through untouched."""
    if not isinstance(model, nn.Module):
        yield model
        return
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, g in grads:
            p.requires_grad_(g)


def _check_eps(eps: float | torch.Tensor, allow_inf: bool) -> float | torch.Tensor:
    if isinstance(eps, torch.Tensor):
        if eps.dim() != 1 or not bool(((eps > 0) & (eps < math.inf)).all()):
            raise ArgumentError("eps", "eps must be a number > 0, or a (B,) tensor of finite numbers > 0")
        return eps.detach().float()
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps > 0) \
            or (eps == math.inf and not allow_inf):
        raise ArgumentError("eps", f"eps must be a {'' if allow_inf else 'finite '}number > 0, got {eps!r}")
    return float(eps)


class Attack:
    """Base class: validates the batch, runs ``perturb`` inside ``frozen_eval`` with autograd on,
    returns a detached x' in [0, 1]. Subclasses set ``norm``/``eps`` and implement ``perturb``."""

    norm: str = "linf"
    eps: float | torch.Tensor = 0.0

    def __call__(self, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ArgumentError("x", "x must be a batch tensor (B, C, H, W)")
        if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
            raise ArgumentError("y", f"y must be a ({x.shape[0]},) tensor of labels, got {getattr(y, 'shape', y)}")
        if isinstance(self.eps, torch.Tensor) and self.eps.shape != (x.shape[0],):
            raise ArgumentError("eps", f"eps: a per-input eps must have shape ({x.shape[0]},), "
                                       f"got {tuple(self.eps.shape)}")
        x = x.detach().clone() if x.is_inference() else x.detach()
        if bool((x < 0).any() or (x > 1).any()):
            raise ArgumentError("x", "x must be pixels in [0, 1]")
        with frozen_eval(model), torch.enable_grad():
            x_adv = self.perturb(model, x, y, generator)
        return x_adv.detach()

    def perturb(self, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def _eps_rows(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.eps, torch.Tensor):
            return self.eps.to(x.device)
        return torch.full((x.shape[0],), self.eps, device=x.device)

    @staticmethod
    def gradient(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad_x of the summed cross-entropy, per-example cross-entropy) at ``x``."""
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), y, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return grad, loss.detach()

    def config(self) -> dict[str, Any]:
        raise NotImplementedError


def _plain(v: float | torch.Tensor) -> Any:
    """A JSON-friendly value (inf as the string "inf", per-input tensors as "per-input")."""
    if isinstance(v, torch.Tensor):
        return "per-input"
    return "inf" if v == math.inf else v


__all__ = ["NORMS", "Attack", "ascent_direction", "check_norm", "frozen_eval", "lp_norm", "project"]
