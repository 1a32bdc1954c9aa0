"""ALPS: Adversarial Labelling of Perturbed Samples (Guo, Zhang, Zheng & Mao, IJCAI 2021,
Algorithm 1).

Each input x_i is moved towards another input of the batch and given an adversarial soft label:

    x~_i  = lam_i x_i + (1 - lam_i) x_perm(i),      lam_i ~ Beta(alps_alpha, alps_beta)
    k*_i  = argmin_k f_k(x~_i)                       (the least-likely class of the model at x~_i)
    rho_i = (1 - E/2) y_i + (E/2) e_{k*_i}            (E = alps_eps)
    L     = mean_i CE(rho_i, f(x~_i))                 (soft-label cross-entropy)

rho_i is the closed-form maximiser of the cross-entropy over labels in the L1 ball of radius E
around the one-hot y_i: it moves E/2 of the label mass to the class the model finds least likely.
The defaults Beta(8, 2) (mode 7/8) keep x~ close to x_i, as the label's main mass requires.
With ``sigma`` > 0, Gaussian noise (or ``noise``: laplace, uniform) is added to x~ (the model trains on noisy inputs and can be
certified at sigma); k* is then the least-likely class at the noisy input.

k* comes from the (detached) logits of the training forward itself: no extra forward pass.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import sample_beta
from ..losses import soft_cross_entropy
from ..noise import add_noise, noise_params, training_noise
from ..validation import ArgumentError, check_sigma
from . import register_method
from .base import Method


def alps_target(logits: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """rho = (1 - eps/2) e_y + (eps/2) e_{k*} with k* = argmin of each row of ``logits`` (B, K):
    a (B, K) probability tensor (ALPS's adversarial label)."""
    k_star = logits.detach().argmin(1)
    num_classes = logits.shape[1]
    return ((1 - eps / 2) * F.one_hot(y, num_classes) + (eps / 2) * F.one_hot(k_star, num_classes)).to(logits.dtype)


@register_method("alps")
class ALPS(Method):
    """Train on x~ = lam x_i + (1 - lam) x_j (+ noise) with adversarial soft labels (module doc)."""

    def __init__(self, sigma: float = 0.0, alps_alpha: float = 8.0, alps_beta: float = 2.0, alps_eps: float = 0.5,
                 noise: str = "gaussian"):
        super().__init__()
        self.sigma = check_sigma(sigma)
        self.noise = training_noise(noise, self.sigma)
        for name, v in (("alps_alpha", alps_alpha), ("alps_beta", alps_beta)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0) or not math.isfinite(v):
                raise ArgumentError(name, f"{name} must be a finite number > 0, got {v!r}")
        if isinstance(alps_eps, bool) or not isinstance(alps_eps, (int, float)) or not (0 < alps_eps <= 1):
            raise ArgumentError("alps_eps", f"alps_eps must be in (0, 1], got {alps_eps!r}")
        self.alps_alpha, self.alps_beta, self.alps_eps = float(alps_alpha), float(alps_beta), float(alps_eps)

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        """x~ = lam x + (1 - lam) x[perm] (+ N(0, sigma^2 I)); lam and perm drawn on the CPU."""
        B = x.shape[0]
        lam = sample_beta(self.alps_alpha, self.alps_beta, B).to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
        perm = torch.randperm(B).to(x.device)
        return add_noise(lam * x + (1 - lam) * x[perm], self.sigma, self.noise)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(self.perturb(x))
        self._record_accuracy(logits, y)
        return soft_cross_entropy(logits, alps_target(logits, y, self.alps_eps))

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "alps_alpha": self.alps_alpha, "alps_beta": self.alps_beta,
                "alps_eps": self.alps_eps, **noise_params(self.noise)}


__all__ = ["ALPS", "alps_target"]
