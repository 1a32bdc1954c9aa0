"""Noise distributions for randomized smoothing, in pixel space.

Each distribution draws noise (``sample``/``sample_``) and turns a lower bound on the top-class
probability into a certified radius (``radius``). Everything that draws smoothing noise in
smoothcert -- certification, prediction, and every training method -- does so through here.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm


class GaussianNoise:
    """Isotropic Gaussian N(0, sigma^2 I); certifies L2 radius sigma * Phi^-1(pA_lower)
    (Cohen et al., 2019, Theorem 1 with pB = 1 - pA)."""

    norm = "l2"

    def __init__(self, sigma: float):
        sigma = float(sigma)
        if not (sigma > 0.0) or not math.isfinite(sigma):
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        self.sigma = sigma

    def sample_(self, buf: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fill ``buf`` in place with noise (no allocation) and return it."""
        return buf.normal_(0.0, self.sigma, generator=generator)

    def perturb(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x + noise, a new tensor of x's shape, device and dtype (differentiable in x)."""
        return x + self.sample_(torch.empty_like(x), generator)

    def radius(self, p_lower: float | np.ndarray) -> float | np.ndarray:
        """Certified L2 radius sigma * Phi^-1(p_lower) for a lower bound ``p_lower`` on pA
        (vectorised); 0.0 where p_lower <= 1/2 (no certificate)."""
        p = np.asarray(p_lower, dtype=np.float64)
        r = np.where(p > 0.5, self.sigma * norm.ppf(np.maximum(p, 0.5)), 0.0)
        return float(r) if r.ndim == 0 else r

    def p_lower_needed(self, radius: float) -> float:
        """Smallest lower bound on pA that certifies ``radius``: Phi(radius / sigma)."""
        return float(norm.cdf(float(radius) / self.sigma))

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma})"


def add_gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, sigma^2 I); identity when sigma == 0 (training methods allow sigma = 0)."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    if sigma == 0:
        return x
    return GaussianNoise(sigma).perturb(x, generator)
