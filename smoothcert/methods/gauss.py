"""Gaussian data augmentation (Cohen et al., 2019, Sec. 3.3): minimise CE(f(x + eps), y) with
eps ~ N(0, sigma^2 I) in [0, 1] pixel space (normalisation is the model's first layer).

It is MaxUp with m = 1 (``maxup-gauss``, no warm-up): one noisy copy per input, no selection."""
from __future__ import annotations

from typing import Any

from . import register_method
from ..noise import noise_params
from .maxup import MaxUpGauss


@register_method("gauss")
class Gauss(MaxUpGauss):
    """Train on x + N(0, sigma^2 I) (or ``noise``: laplace, uniform at per-coordinate std sigma);
    sigma = 0 is plain training."""

    def __init__(self, sigma: float, noise: str = "gaussian"):
        super().__init__(sigma, m=1, warmup_epochs=0, noise=noise)

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, **noise_params(self.noise)}


__all__ = ["Gauss"]
