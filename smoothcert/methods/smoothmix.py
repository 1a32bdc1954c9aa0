"""SmoothMix (Jeong, Park, Kim, Lee, Kim & Shin, "SmoothMix: Training Confidence-calibrated
Smoothed Classifiers for Certified Robustness", NeurIPS 2021, Sec. 3, Eq. 5-8).

For a batch x with labels y and m Gaussian noise vectors d_1..d_m (``num_noise_vec``):

1. **The adversary** (Eq. 5): T = ``num_steps`` steps of L2 gradient ascent of
   -log G(x')_y on the soft smoothed classifier G(x') = (1/m) sum_k softmax f(x' + d_k) (the model
   in eval mode, its parameters frozen), each step x' <- clip_[0,1](x' + step_size * g / ||g||_2),
   projected onto the L2 ball of radius ``maxnorm`` around x when it is given. The end of the path
   is x^(T); the clean side of the mixup is x^(mix_step): x itself for ``mix_step`` = 0, the
   one-step adversary x^(1) for ``mix_step`` = 1 (the paper's variant against over-confidence),
   kept within ``maxnorm_s`` (default step_size * mix_step) of x, this radius ramped like eta.
2. **The loss** (Eq. 8), with x0 = x^(mix_step), F^ = (1/m) sum_k softmax f(x0 + d_k):

       L = (1/m) sum_k CE(f(x0 + d_k), y)
           + eta * w_t * (1/m) sum_k 1[argmax F^ = y] * KL(y^mix || softmax f(x^mix + d_k))

   where x^mix = (1 - lam) x0 + lam x^(T), y^mix = (1 - lam) F^ + lam * (1/K) 1 with
   lam ~ U[0, 1/2] per input (the mixup label runs from the smoothed prediction at x0 to the uniform
   distribution at the adversary), w_t = min(1, (t + 1) / warmup) for 0-based epoch t. Gradients
   flow through F^ in the target, as in the reference code.

Batching: the reference cuts each loaded batch into m mini-batches and takes one step per
mini-batch; ``--batch-size 256/m`` here gives the same steps. Published MNIST settings (log names
``smix_{step_size}_{T}_m{mix_step}/eta_{eta}/num_{m}``): m = 4, step_size 1.0, eta in {1, 2, 5},
T = 2 / 4 / 8 at sigma = 0.25 / 0.5 / 1.0, mix_step 0 or 1. The adversary is defined through the
Gaussian soft smoothed classifier; other noises are accepted (``noise``) and then also drawn in
the adversary, which keeps the paper's construction with the other smoothing distribution.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.base import ascent_direction, frozen_eval, project
from ..losses import kl_to
from ..noise import get_noise, noise_params, training_noise
from ..validation import ArgumentError, check_int, check_sigma
from . import register_method
from .base import Method
from .common import check_number, noisy_copies, per_copy, unwrap


def soft_smoothed_nll(model: nn.Module, x: torch.Tensor, y: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Summed -log G(x)_y with G(x) = (1/m) sum_k softmax f(x + d_k), for (m, *x.shape) noise ``d``."""
    m = d.shape[0]
    probs = F.softmax(model((x.unsqueeze(0) + d).flatten(0, 1)).float(), dim=1)
    g = per_copy(probs, m).mean(0)
    return F.nll_loss(g.clamp_min(1e-20).log(), y, reduction="sum")


def _ball(x_new: torch.Tensor, x: torch.Tensor, radius: float | None) -> torch.Tensor:
    """x_new projected onto the L2 ball of ``radius`` around x (none when None), then into [0, 1]."""
    if radius is not None:
        x_new = x + project(x_new - x, torch.full((x.shape[0],), float(radius), device=x.device), "l2")
    return x_new.clamp(0.0, 1.0).detach()


def smoothmix_path(model: nn.Module, x: torch.Tensor, y: torch.Tensor, d: torch.Tensor, num_steps: int,
                   step_size: float, mix_step: int, maxnorm: float | None,
                   maxnorm_s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x^(mix_step), x^(T)): the point of the adversary's path used as the clean side (within
    ``maxnorm_s`` of x) and its end (module doc, step 1). The model runs frozen in eval mode."""
    x = x.detach()
    adv, start = x, x
    with frozen_eval(model), torch.enable_grad():
        for i in range(num_steps):
            if i == mix_step:
                start = adv
            adv = adv.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(soft_smoothed_nll(model, adv, y, d), adv)
            adv = _ball(adv + step_size * ascent_direction(grad, "l2"), x, maxnorm)
    return _ball(start, x, maxnorm_s), adv


@register_method("smoothmix")
class SmoothMix(Method):
    """Noisy CE at x^(mix_step) + eta x the mixup KL towards the adversary (module doc)."""

    def __init__(self, sigma: float, num_noise_vec: int = 4, num_steps: int = 4, step_size: float = 1.0,
                 eta: float = 5.0, mix_step: int = 0, maxnorm: float | None = None, maxnorm_s: float | None = None,
                 warmup: int = 10, noise: str = "gaussian"):
        super().__init__()
        self.sigma = check_sigma(sigma, positive=True)
        self.num_noise_vec = check_int("num_noise_vec", num_noise_vec, 1)
        self.num_steps = check_int("num_steps", num_steps, 1)
        self.step_size = check_number("step_size", step_size, positive=True)
        self.eta = check_number("eta", eta)
        self.mix_step = check_int("mix_step", mix_step, 0)
        if self.mix_step >= self.num_steps:
            raise ArgumentError("mix_step", f"mix_step must be < num_steps ({self.num_steps}), got {mix_step!r}")
        self.maxnorm = None if maxnorm is None else check_number("maxnorm", maxnorm, positive=True)
        self.maxnorm_s = (self.step_size * self.mix_step if maxnorm_s is None
                          else check_number("maxnorm_s", maxnorm_s))
        self.warmup = check_int("warmup", warmup, 1)
        self.noise = get_noise(training_noise(noise, self.sigma), self.sigma)
        self.ramp = 1.0 / self.warmup

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        self.ramp = min(1.0, (epoch + 1) / self.warmup)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        m, B = self.num_noise_vec, x.shape[0]
        d, _ = noisy_copies(self.noise, x, m)
        x0, x_adv = smoothmix_path(unwrap(model), x, y, d, self.num_steps, self.step_size, self.mix_step,
                                   self.maxnorm, self.ramp * self.maxnorm_s)
        logits = model((x0.unsqueeze(0) + d).flatten(0, 1))
        targets = y.repeat(m)
        self._record_accuracy(logits, targets)
        smoothed = F.softmax(per_copy(logits, m), dim=2).mean(0)  # F^ at x0, (B, K)
        lam = torch.rand(B, device=x.device, dtype=x.dtype) / 2
        x_mix = (1 - lam).view(-1, *[1] * (x.dim() - 1)) * x0 + lam.view(-1, *[1] * (x.dim() - 1)) * x_adv
        uniform = torch.full_like(smoothed, 1.0 / smoothed.shape[1])
        y_mix = (1 - lam).view(-1, 1) * smoothed + lam.view(-1, 1) * uniform
        mix_logits = model((x_mix.unsqueeze(0) + d).flatten(0, 1))
        correct = (smoothed.argmax(1) == y).to(logits.dtype).repeat(m)
        mixup = kl_to(y_mix.repeat(m, 1), mix_logits)
        return F.cross_entropy(logits, targets) + self.eta * self.ramp * (correct * mixup).mean()

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "num_noise_vec": self.num_noise_vec, "num_steps": self.num_steps,
                "step_size": self.step_size, "eta": self.eta, "mix_step": self.mix_step, "maxnorm": self.maxnorm,
                "maxnorm_s": self.maxnorm_s, "warmup": self.warmup, **noise_params(self.noise.name)}


__all__ = ["SmoothMix", "smoothmix_path", "soft_smoothed_nll"]
