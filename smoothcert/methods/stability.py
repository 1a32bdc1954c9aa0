"""Stability training (Li, Chen, Wang & Carin, "Certified Adversarial Robustness with Additive
Noise", NeurIPS 2019, Sec. 4; the stability loss of Zheng et al., CVPR 2016):

    L = CE(f(x), y) + lbd * KL(softmax f(x) || softmax f(x + d)),      d ~ N(0, sigma^2 I)

the cross-entropy on the clean input plus lbd times the divergence of the noisy prediction from
the clean one; gradients flow through both predictions. Up to the entropy of softmax f(x), the
KL term is the soft-label cross-entropy H(softmax f(x), softmax f(x + d)) that the published
MNIST/CIFAR runs of Jeong & Shin's repository minimise (``stab/lbd_2``): the two objectives
differ by -lbd * H(softmax f(x)), so ``target="cross-entropy"`` gives that exact form and the
default ``"kl"`` the paper's. lbd = 2 is the published default (1 at sigma = 1 on CIFAR-100).
Any noise of ``smoothcert.noise`` can be drawn (``noise``); the objective does not depend on it.
A step costs two forward/backward passes of the batch (clean and noisy).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import kl_to, soft_cross_entropy
from ..noise import get_noise, noise_params, training_noise
from ..validation import ArgumentError, check_sigma
from . import register_method
from .base import Method
from .common import check_number

TARGETS = ("kl", "cross-entropy")


@register_method("stability")
class Stability(Method):
    """CE on x plus lbd x KL(f(x) || f(x + d)) (module doc)."""

    def __init__(self, sigma: float, lbd: float = 2.0, target: str = "kl", noise: str = "gaussian"):
        super().__init__()
        self.sigma = check_sigma(sigma, positive=True)
        self.lbd = check_number("lbd", lbd)
        if target not in TARGETS:
            raise ArgumentError("target", f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        self.target = target
        self.noise = get_noise(training_noise(noise, self.sigma), self.sigma)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        clean = model(x)  # two forwards, as the reference: BatchNorm normalises each batch on its own
        noisy = model(self.noise.perturb(x))
        self._record_accuracy(noisy, y)
        p_clean = F.softmax(clean, dim=1)
        stab = kl_to(p_clean, noisy) if self.target == "kl" else soft_cross_entropy(noisy, p_clean, reduction="none")
        return F.cross_entropy(clean, y) + self.lbd * stab.mean()

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "lbd": self.lbd, "target": self.target, **noise_params(self.noise.name)}


__all__ = ["Stability"]
