"""Consistency regularization (Jeong & Shin, "Consistency Regularization for Certified Robustness
of Smoothed Classifiers", NeurIPS 2020, Eq. 7-8).

For each input x draw m noise vectors d_1..d_m (``num_noise_vec``), p_k = softmax f(x + d_k) and
their mean p^ = (1/m) sum_k p_k. The objective is

    L = (1/m) sum_k CE(f(x + d_k), y)  +  lbd * (1/m) sum_k KL(p^ || p_k)  +  eta * H(p^)

averaged over the batch: the noisy cross-entropy, the consistency of each copy's prediction with
the copies' mean (gradients flow through p^ too), and the entropy of the mean. The published MNIST
runs use m = 2, lbd = 20 (``consistency/cohen/num_2/lbd_20.0``) and later lbd in {5, 10, 20} with
eta = 0.5 (the code's default).

With ``epsilon`` > 0 the copies are SmoothAdv's (Salman et al. 2019; "Consistency + SmoothAdv" in
the paper): x is first replaced by the PGD example x' of the soft smoothed classifier on the same m
noise vectors (``smoothadv.SmoothAdv.perturb``: L2, ``num_steps`` steps of 2 eps / num_steps,
eps ramped over ``warmup`` epochs), then the objective above is taken at x'.

Batching: the reference code cuts each loaded batch of 256 into m mini-batches of 256 / m inputs
and takes one SGD step per mini-batch. The same steps are ``--batch-size 256/m`` here (m * B noisy
rows per step either way). Every noise of ``smoothcert.noise`` can be drawn (``noise``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import entropy, kl_to
from ..noise import get_noise, noise_params, training_noise
from ..validation import check_int, check_sigma
from . import register_method
from .base import Method
from .common import check_number, noisy_copies, per_copy


def consistency_terms(logits: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL, H): the (B,) mean over the m copies of KL(p^ || p_k) and the (B,) entropy H(p^) of
    the copies' mean prediction, from (m * B, K) copy-major logits."""
    probs = F.softmax(per_copy(logits, m), dim=2)  # (m, B, K)
    mean = probs.mean(0)
    kl = torch.stack([kl_to(mean, per_copy(logits, m)[k]) for k in range(m)]).mean(0)
    return kl, entropy(mean)


@register_method("consistency")
class Consistency(Method):
    """Noisy cross-entropy + lbd x consistency + eta x entropy over m noisy copies (module doc)."""

    def __init__(self, sigma: float, num_noise_vec: int = 2, lbd: float = 10.0, eta: float = 0.5,
                 epsilon: float = 0.0, num_steps: int = 4, warmup: int = 10, noise: str = "gaussian"):
        super().__init__()
        self.sigma = check_sigma(sigma, positive=True)
        self.num_noise_vec = check_int("num_noise_vec", num_noise_vec, 2)
        self.lbd = check_number("lbd", lbd)
        self.eta = check_number("eta", eta)
        self.epsilon = check_number("epsilon", epsilon)
        self.num_steps = check_int("num_steps", num_steps, 1)
        self.warmup = check_int("warmup", warmup, 0)
        self.noise = get_noise(training_noise(noise, self.sigma), self.sigma)
        self.adversary = None
        if self.epsilon > 0:
            from .smoothadv import SmoothAdv  # the one SmoothAdv attack, with its ramp

            self.adversary = SmoothAdv(self.sigma, self.epsilon, self.num_steps, self.num_noise_vec, self.warmup,
                                       noise=self.noise.name)

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        if self.adversary is not None:
            self.adversary.on_epoch_start(epoch, num_epochs)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        m = self.num_noise_vec
        d, inputs = noisy_copies(self.noise, x, m)
        if self.adversary is not None:
            x_adv, _ = self.adversary.perturb(model, x, y, noise=d)
            inputs = (x_adv.unsqueeze(0) + d).flatten(0, 1)
        logits = model(inputs)
        targets = y.repeat(m)
        self._record_accuracy(logits, targets)
        kl, ent = consistency_terms(logits, m)
        return F.cross_entropy(logits, targets) + (self.lbd * kl + self.eta * ent).mean()

    def params(self) -> dict[str, Any]:
        p = {"sigma": self.sigma, "num_noise_vec": self.num_noise_vec, "lbd": self.lbd, "eta": self.eta}
        if self.epsilon > 0:
            p.update(epsilon=self.epsilon, num_steps=self.num_steps, warmup=self.warmup)
        return {**p, **noise_params(self.noise.name)}


__all__ = ["Consistency", "consistency_terms"]
