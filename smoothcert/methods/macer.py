"""MACER (Zhai, Dan, He, Zhang, Gong, Hopcroft, Wang & Wang, "MACER: Attack-free and Scalable
Robust Training via Maximizing Certified Radius", ICLR 2020, Algorithm 1 and Eq. 6-7).

For each input x draw k Gaussian noise vectors (``num_noise_vec``) and let z_j = f(x + d_j) be the
logits. With the soft smoothed classifiers

    G(x)      = (1/k) sum_j softmax(z_j)            (classification)
    G_beta(x) = (1/k) sum_j softmax(beta * z_j)     (robustness; inverse temperature ``beta``)

the loss of a batch of B inputs is

    L = (1/B) sum_i [ -log G(x_i)_{y_i}
                      + lbd * (sigma / 2) * 1[i in S] * (gamma - Phi^-1(G_beta(x_i)_{y_i}) + Phi^-1(G_beta(x_i)_{c2})) ]

where c2 is the runner-up class of G_beta(x_i) and S the inputs whose top class of G_beta is y_i
and whose margin xi_i = Phi^-1(top) - Phi^-1(runner-up) lies in [0, gamma] (finite): the hinge
max(0, gamma - xi_i) on the certified radius (sigma / 2) xi_i of Cohen et al.'s bound, restricted
as the reference implementation does to inputs with a margin below gamma. ``deferred`` epochs of
lbd = 0 come first (the published MNIST runs, ``macer_deferred30``: the radius term starts after
the first learning-rate drop; their code drops it for 0-based epochs 0..30, i.e. deferred = 31
here for a 30-epoch step).

The radius term is the Gaussian L2 radius, so only Gaussian noise is accepted. Published MNIST
settings: k = 16, lbd = 16 (6 at sigma = 1), gamma = 8, beta = 16, batch 256, lr 0.01.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..noise import GaussianNoise
from ..validation import ArgumentError, check_int, check_sigma
from . import register_method
from .base import Method
from .common import check_number, noisy_copies, per_copy


def macer_loss(logits: torch.Tensor, y: torch.Tensor, k: int, sigma: float, lbd: float, gamma: float,
               beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(classification, robustness): the two (B,)-summed terms of MACER's loss from (k * B, K)
    copy-major logits (module doc); the total is (classification + lbd * robustness) / B."""
    z = per_copy(logits.float(), k)  # (k, B, K)
    g = F.softmax(z, dim=2).mean(0)
    classification = F.nll_loss(torch.log(g + 1e-10), y, reduction="sum")
    if lbd == 0:
        return classification, classification.new_zeros(())
    g_beta = F.softmax(beta * z, dim=2).mean(0)
    top2, idx = g_beta.topk(2, dim=1)
    normal = torch.distributions.Normal(0.0, 1.0)
    with torch.no_grad():
        xi = normal.icdf(top2[:, 0]) - normal.icdf(top2[:, 1])
        keep = (idx[:, 0] == y) & torch.isfinite(xi) & (xi <= gamma)
    kept = top2[keep]  # Phi^-1 only where it is finite: a 0 * inf gradient elsewhere would be NaN
    robustness = (gamma - normal.icdf(kept[:, 0]) + normal.icdf(kept[:, 1])).sum() * sigma / 2
    return classification, robustness


@register_method("macer")
class MACER(Method):
    """Soft-smoothed cross-entropy + lbd x hinge on the certified-radius margin (module doc)."""

    def __init__(self, sigma: float, num_noise_vec: int = 16, lbd: float = 16.0, gamma: float = 8.0,
                 beta: float = 16.0, deferred: int = 0, noise: str = "gaussian"):
        super().__init__()
        self.sigma = check_sigma(sigma, positive=True)
        if noise != "gaussian":
            raise ArgumentError("noise", f"macer: noise must be gaussian (its radius term is the Gaussian L2 "
                                         f"radius), got {noise!r}")
        self.num_noise_vec = check_int("num_noise_vec", num_noise_vec, 2)
        self.lbd = check_number("lbd", lbd)
        self.gamma = check_number("gamma", gamma, positive=True)
        self.beta = check_number("beta", beta, positive=True)
        self.deferred = check_int("deferred", deferred, 0)
        self.noise = GaussianNoise(self.sigma)
        self.current_lbd = self.lbd if self.deferred == 0 else 0.0

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        self.current_lbd = 0.0 if epoch < self.deferred else self.lbd

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = self.num_noise_vec
        _, inputs = noisy_copies(self.noise, x, k)
        logits = model(inputs)
        self._record_accuracy(logits, y.repeat(k))
        cl, rl = macer_loss(logits, y, k, self.sigma, self.current_lbd, self.gamma, self.beta)
        return (cl + self.current_lbd * rl) / x.shape[0]

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "num_noise_vec": self.num_noise_vec, "lbd": self.lbd, "gamma": self.gamma,
                "beta": self.beta, "deferred": self.deferred}


__all__ = ["MACER", "macer_loss"]
