"""DDPM training (Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020,
Algorithm 1) of the toolkit's small epsilon-prediction U-Net (``--arch ddpm_unet``, the
default; ``smoothcert.denoisers.diffusion.EpsUNet``), for one-shot denoised smoothing (Carlini
et al., ICLR 2023):

    L = mean ||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t)||^2,
    x0 = 2 x - 1 in [-1, 1],  t ~ U{0, ..., T - 1},  eps ~ N(0, I),

on the linear beta schedule from ``beta_start`` to ``beta_end`` over ``num_steps`` = T steps
(Ho et al.'s 1e-4, 0.02, 1000). The run's config.json records the schedule; a trained run
certifies a classifier through one-shot denoising with
``smoothcert certify CLASSIFIER_RUN --denoiser DDPM_RUN`` (``denoisers.loading``).

DDPMs are usually trained with Adam: ``optimizer="adam"`` (``--optimizer adam``), e.g. lr 1e-3
for this small network (Ho et al.: 2e-4 for theirs). ``classifier`` (optional, never trained) makes the logged test
accuracy meaningful: each epoch's noisy test accuracy is that of one-shot denoising at ``sigma``
(also the default sigma to certify through this run at) in front of it; without it the
logged test accuracy is nan and the training accuracy 0 (a DDPM classifies nothing).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..denoisers.diffusion import OneShotDenoiser, PackedEps, ddpm_loss, linear_schedule
from ..validation import check_sigma
from . import register_method
from .base import Method, TrainContext


@register_method("ddpm")
class DDPMTraining(Method):
    """The DDPM loss on the linear schedule (module doc)."""

    default_arch = "ddpm_unet"

    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 classifier: str | None = None, sigma: float = 0.0):
        super().__init__()
        self.alphas_cumprod = linear_schedule(num_steps, beta_start, beta_end)  # checks the three
        self.num_steps, self.beta_start, self.beta_end = int(num_steps), float(beta_start), float(beta_end)
        self.sigma = check_sigma(sigma)
        self._abar = self.alphas_cumprod.float()
        self.classifier = self.classifier_path = self.classifier_fingerprint = None
        if classifier is not None:
            from .denoiser import frozen_classifier

            self.classifier, self.classifier_path, self.classifier_fingerprint, _ = frozen_classifier(
                classifier, "classifier")

    def setup(self, context: TrainContext) -> None:
        self._abar = self.alphas_cumprod.to(device=context.device, dtype=torch.float32)
        if self.classifier is not None:
            self.classifier.to(context.device)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ddpm_loss(PackedEps(model), x, self._abar.to(x.device))

    def evaluate_model(self, model: nn.Module) -> nn.Module | None:
        if self.classifier is None:
            return None
        from ..denoisers.compose import Denoised

        return Denoised(OneShotDenoiser(PackedEps(model), self.alphas_cumprod, self.sigma), self.classifier)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sigma": self.sigma, "num_steps": self.num_steps, "beta_start": self.beta_start,
                               "beta_end": self.beta_end}
        if self.classifier is not None:
            out.update(classifier=self.classifier_path, classifier_fingerprint=self.classifier_fingerprint)
        return out


__all__ = ["DDPMTraining"]
