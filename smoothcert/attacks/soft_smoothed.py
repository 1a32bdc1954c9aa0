"""The soft smoothed classifier of Salman et al. (NeurIPS 2019): G(x) = E_{d ~ N(0, sigma^2 I)}
softmax(f(x + d)), estimated by the mean softmax over M noisy copies of x. The copies share the
one input (hence one adversarial delta); its forward returns log G, so the attack loss is their
SmoothAdv objective -log G_y(x'). SmoothAdv training (``methods.smoothadv``), ``smoothcert attack
--smoothed`` and ``smoothcert check-certificates`` all run ``PGD`` on it."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..noise import GaussianNoise
from ..validation import ArgumentError, check_int


class SoftSmoothed(nn.Module):
    """log G(x), G(x) = (1/M) sum_k softmax(f(x + d_k)), d_k ~ N(0, sigma^2 I) (Salman et al.,
    2019): the soft smoothed classifier that SmoothAdv attacks.

    ``noise`` (optional, shape (M, *x.shape)) fixes the M noise vectors -- SmoothAdv draws them
    once per batch and reuses them in every attack step and in the training step. Without it each
    forward draws M fresh vectors through ``GaussianNoise`` (with ``generator``), so each PGD
    step follows a fresh estimate of the gradient of log G.
    """

    def __init__(self, base_classifier: nn.Module, sigma: float, num_noise_vec: int = 1,
                 noise: torch.Tensor | None = None, generator: torch.Generator | None = None):
        super().__init__()
        num_noise_vec = check_int("num_noise_vec", num_noise_vec, 1)
        self.base_classifier = base_classifier
        self.noise_dist = GaussianNoise(sigma)
        self.num_noise_vec = num_noise_vec
        if noise is not None and noise.shape[0] != self.num_noise_vec:
            raise ArgumentError("noise", f"noise must hold num_noise_vec={num_noise_vec} vectors, "
                                         f"got shape {tuple(noise.shape)}")
        self.fixed_noise = noise
        self.generator = generator

    @property
    def sigma(self) -> float:
        return self.noise_dist.sigma

    def draw_noise(self, x: torch.Tensor) -> torch.Tensor:
        """M noise vectors for the batch ``x``: a (M, *x.shape) tensor."""
        return self.noise_dist.sample_(x.new_empty((self.num_noise_vec, *x.shape)), self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.fixed_noise if self.fixed_noise is not None else self.draw_noise(x)
        if noise.shape[1:] != x.shape:
            raise ValueError(f"fixed noise of shape {tuple(noise.shape)} does not fit inputs {tuple(x.shape)}")
        logits = self.base_classifier((x.unsqueeze(0) + noise).flatten(0, 1))
        probs = F.softmax(logits.float(), dim=1).view(self.num_noise_vec, x.shape[0], -1).mean(0)
        return probs.clamp_min(1e-20).log()


__all__ = ["SoftSmoothed"]
