"""SmoothAdv-PGD (Salman et al., "Provably Robust Deep Learning via Adversarially Trained Smoothed
Classifiers", NeurIPS 2019): SmoothAdv with the PGD attacker.

For a batch x with labels y:

1. draw M = ``num_noise_vec`` noise vectors d_1..d_M ~ N(0, sigma^2 I) per input (once per batch; ``noise``
   laplace or uniform draws those instead);
2. find x' = x + delta with one delta shared by the M copies that maximises the SmoothAdv
   objective -log (1/M) sum_k softmax(f(x' + d_k))_y: ``num_steps`` steps of L2 PGD
   (``attacks.PGD`` on ``attacks.SoftSmoothed`` with the noise of step 1) of size
   2 * eps / num_steps, x' clipped to [0, 1], delta projected onto the L2 ball of radius eps,
   the model in eval mode with frozen parameters;
3. train on the M noisy adversarial copies x' + d_k: mean cross-entropy over all M * B of them,
   the model in the train/eval mode it arrived in (train, from the Trainer).

eps is an L2 radius in [0, 1] pixel units: the reference code takes ``--epsilon`` on a 0..255
scale and divides it by 256, so its 64 is 0.25 here. It is ramped linearly over the first
``warmup`` epochs: eps_t = eps * min(1, (t + 1) / warmup) for 0-based epoch t, the step size
following eps_t; ``warmup`` 0 or 1 means no ramp.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import PGD, SoftSmoothed
from ..noise import get_noise, noise_params, training_noise
from ..validation import ArgumentError, check_int, check_sigma
from . import register_method
from .base import Method
from .common import unwrap


@register_method("smoothadv")
class SmoothAdv(Method):
    """SmoothAdv-PGD: train on the M noisy copies of the soft-smoothed-classifier PGD example."""

    def __init__(self, sigma: float, epsilon: float, num_steps: int = 10, num_noise_vec: int = 1, warmup: int = 1,
                 noise: str = "gaussian"):
        super().__init__()
        self.sigma = check_sigma(sigma, positive=True)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not (0 < epsilon <= 1):
            raise ArgumentError("epsilon", f"epsilon must be an L2 radius in (0, 1] (pixel units), got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.num_steps = check_int("num_steps", num_steps, 1)
        self.num_noise_vec = check_int("num_noise_vec", num_noise_vec, 1)
        self.warmup = check_int("warmup", warmup, 0)
        self.noise = get_noise(training_noise(noise, self.sigma), self.sigma)  # drawn in step 1
        self.current_epsilon = self.epsilon_at(0)

    def epsilon_at(self, epoch: int) -> float:
        """The ramped radius of 0-based ``epoch``: eps * min(1, (epoch + 1) / warmup)."""
        return self.epsilon * min(1.0, (epoch + 1) / max(self.warmup, 1))

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        self.current_epsilon = self.epsilon_at(epoch)

    def attack(self) -> PGD:
        """The PGD of the current epoch: L2, radius eps_t, num_steps steps of 2 * eps_t / num_steps."""
        eps = self.current_epsilon
        return PGD(eps, self.num_steps, 2 * eps / self.num_steps, norm="l2")

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x', noise): the SmoothAdv example and the (M, *x.shape) noise it was found with
        (drawn from ``self.noise`` unless given). No autograd graph."""
        if noise is None:
            noise = self.noise.sample_(x.new_empty((self.num_noise_vec, *x.shape)))
        soft = SoftSmoothed(unwrap(model), None, self.num_noise_vec, self.noise, fixed_noise=noise)
        return self.attack()(soft, x, y), noise

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv, noise = self.perturb(model, x, y)
        inputs = (x_adv.unsqueeze(0) + noise).flatten(0, 1)  # copy-major: row k * B + i is x'_i + d_k
        targets = y.repeat(self.num_noise_vec)
        logits = model(inputs)
        self._record_accuracy(logits, targets)
        return F.cross_entropy(logits, targets)

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "epsilon": self.epsilon, "num_steps": self.num_steps,
                "num_noise_vec": self.num_noise_vec, "warmup": self.warmup, **noise_params(self.noise.name)}


__all__ = ["SmoothAdv"]
