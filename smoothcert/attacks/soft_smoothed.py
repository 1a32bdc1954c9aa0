"""The soft smoothed classifier of Salman et al. (NeurIPS 2019): G(x) = E_d softmax(f(x + d)),
d drawn from the smoothing noise (N(0, sigma^2 I) in the paper; any ``smoothcert.noise`` noise
here), estimated by the mean softmax over M noisy copies of x. The copies share the one input
(hence one adversarial delta); its forward returns log G, so the attack loss is their SmoothAdv
objective -log G_y(x'). SmoothAdv training (``methods.smoothadv``), ``smoothcert attack
--smoothed`` and ``smoothcert check-certificates`` all run ``PGD`` on it."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..noise import Noise, get_noise
from ..validation import ArgumentError, check_int


class SoftSmoothed(nn.Module):
    """log G(x), G(x) = (1/M) sum_k softmax(f(x + d_k)), d_k drawn from ``noise`` (Salman et al.,
    2019, with d_k ~ N(0, sigma^2 I)): the soft smoothed classifier that SmoothAdv attacks.

    ``noise`` is the smoothing noise: a name from ``smoothcert.noise.NOISES`` at ``sigma`` (default
    gaussian) or a ``Noise`` object (``sigma`` may then be None), so the classifier attacked is the
    one a Laplace- or uniform-smoothed run certifies. ``fixed_noise`` (optional, shape
    (M, *x.shape)) fixes the M noise vectors -- SmoothAdv draws them once per batch and reuses
    them in every attack step and in the training step. Without it each forward draws M fresh
    vectors from ``noise`` (with ``generator``), so each PGD step follows a fresh estimate of the
    gradient of log G.
    """

    def __init__(self, base_classifier: nn.Module, sigma: float | None, num_noise_vec: int = 1,
                 noise: str | Noise = "gaussian", generator: torch.Generator | None = None,
                 fixed_noise: torch.Tensor | None = None):
        super().__init__()
        num_noise_vec = check_int("num_noise_vec", num_noise_vec, 1)
        if isinstance(noise, torch.Tensor):
            raise ArgumentError("noise", "noise is the smoothing noise (a name or a Noise object); pass the M "
                                         "noise vectors as fixed_noise")
        self.base_classifier = base_classifier
        self.noise_dist = get_noise(noise, sigma)
        self.num_noise_vec = num_noise_vec
        if fixed_noise is not None and fixed_noise.shape[0] != self.num_noise_vec:
            raise ArgumentError("fixed_noise", f"fixed_noise must hold num_noise_vec={num_noise_vec} vectors, "
                                               f"got shape {tuple(fixed_noise.shape)}")
        self.fixed_noise = fixed_noise
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
