"""FGSM (Goodfellow et al., 2015): x' = clip_[0,1](x + eps * d(grad)) with d = sign for Linf and
d = grad / ||grad||_2 for L2 (the fast gradient method)."""
from __future__ import annotations

from typing import Any

import torch

from .base import Attack, _check_eps, _plain, _rows, ascent_direction, check_norm


class FGSM(Attack):
    """Fast gradient sign method: x' = clip_[0,1](x + eps * d(grad)), one gradient."""

    def __init__(self, eps: float | torch.Tensor, norm: str = "linf"):
        self.eps = _check_eps(eps, allow_inf=False)
        self.norm = check_norm(norm)

    def perturb(self, model, x, y, generator=None):
        grad, _ = self.gradient(model, x, y)
        step = _rows(self._eps_rows(x), x) * ascent_direction(grad, self.norm)
        return (x + step).clamp_(0.0, 1.0)

    def config(self) -> dict[str, Any]:
        return {"attack": "fgsm", "norm": self.norm, "eps": _plain(self.eps)}


__all__ = ["FGSM"]
