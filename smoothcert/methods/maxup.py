"""MaxUp (Gong, Ren, Liu & Liu, CVPR 2021, Algorithm 1): train on the worst of m augmented copies.

For each training input x draw m augmented copies x'_1..x'_m, and minimise

    L(theta) = mean_i max_{j <= m} loss(f_theta(x'_ij), y'_ij)                       (MaxUp, Eq. 3)

whose gradient is the gradient of the loss of each input's argmax-loss copy. Here:

* Selection runs m forward passes without autograd, one augmented copy of the batch per pass,
  keeping only the running worst copy per input (and its labels), so memory does not grow with
  m. The chosen copies then go through one ordinary forward/backward: a MaxUp step costs m
  no-grad forwards plus one Gaussian-augmentation step. With m = 1 no selection pass runs at all
  and the step *is* a plain augmentation step (``gauss`` is ``maxup-gauss`` with m = 1).
* BatchNorm during selection: batch statistics, running statistics not updated
  (``methods.common.batch_stats_only``). Eval mode would rank the copies with running averages
  that lag the weights (and mean little early in training), i.e. by a different function than
  the one the gradient step optimises. Each selection pass is a whole batch of augmented copies,
  distributed like the training batch, so its statistics are those a training forward would use.
  Not updating the running statistics keeps them an average over the training forwards only:
  m selection passes per step would otherwise make them move m + 1 times as fast and describe
  the discarded copies too.
* Low-resolution selection (MaxUp, Sec. 4.2): with ``select_resolution`` R the copies are ranked
  on downsampled (shorter side R) versions and the chosen copy is trained at full resolution.
  The model must accept R-pixel inputs (convolutional nets with global pooling do).
* Warm-up: for the first ``warmup_epochs`` epochs m = 1 (plain augmentation), as the paper does
  for Gaussian MaxUp.
* Soft labels: the loss of a copy is the cross-entropy against its labels, soft for CutMix and
  MixUp (``augment.LabelMix``); the original hard labels count for the training accuracy.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..augment import Augmentation, LabelMix, downsample
from ..noise import noise_params
from ..validation import check_int, check_sigma
from . import register_method
from .base import Method
from .common import batch_stats_only, unwrap


@register_method("maxup")
class MaxUp(Method):
    """Worst-of-m training over any augmentation chain (``augment``, see ``augment.Augmentation``):
    e.g. ``MaxUp("cutmix", m=4)``, ``MaxUp("crop-flip+cutout", m=4, select_resolution=16)``.
    With ``sigma`` > 0 Gaussian noise (or ``noise``: laplace, uniform) ends the chain (the model
    can then be certified at sigma with that noise)."""

    def __init__(self, augment: str, m: int, select_resolution: int | None = None, sigma: float = 0.0,
                 warmup_epochs: int = 0, noise: str = "gaussian"):
        super().__init__()
        self.m = check_int("m", m, 1)
        self.sigma = check_sigma(sigma)
        self.augmentation = Augmentation(augment, self.sigma, noise)
        self.noise = self.augmentation.noise
        self.augment = str(augment).replace(" ", "")
        self.select_resolution = None if select_resolution is None else check_int("select_resolution", select_resolution, 1)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, 0)
        self.current_m = self.m if self.warmup_epochs == 0 else 1

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """m = 1 during the first ``warmup_epochs`` epochs, ``m`` afterwards."""
        self.current_m = 1 if epoch < self.warmup_epochs else self.m

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.current_m == 1:
            x_train, target = self.augmentation(x, y)
        else:
            x_train, target = self.select(unwrap(model), x, y, self.current_m)
        logits = model(x_train)
        self._record_accuracy(logits, y)
        return target.per_sample_loss(logits).mean()

    @torch.no_grad()
    def select(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: int) -> tuple[torch.Tensor, LabelMix]:
        """The argmax-loss copy of each input among ``m`` augmented copies, and its labels.

        Copies are drawn one batch at a time (copy j is the j-th call of the augmentation) and
        ranked by per-input loss without autograd; ties keep the earliest copy."""
        best_x: torch.Tensor | None = None
        best_t: LabelMix | None = None
        best_loss: torch.Tensor | None = None
        with batch_stats_only(model):
            for _ in range(m):
                xa, t = self.augmentation(x, y)
                loss = t.per_sample_loss(self._forward_select(model, xa)).float()
                if best_x is None:
                    best_x, best_t, best_loss = xa, t, loss
                    continue
                better = loss > best_loss
                best_x = torch.where(better.view(-1, *([1] * (xa.dim() - 1))), xa, best_x)
                best_t = t.where(better, best_t)
                best_loss = torch.where(better, loss, best_loss)
        return best_x, best_t  # type: ignore[return-value]

    def _forward_select(self, model: nn.Module, xa: torch.Tensor) -> torch.Tensor:
        if self.select_resolution is None:
            return model(xa)
        small = downsample(xa, self.select_resolution)
        try:
            return model(small)
        except RuntimeError as e:
            raise ValueError(f"select_resolution {self.select_resolution}: the model cannot take "
                             f"{small.shape[-2]}x{small.shape[-1]} inputs ({str(e).splitlines()[0][:120]})") from None

    def params(self) -> dict[str, Any]:
        return {"augment": self.augment, "m": self.m, "select_resolution": self.select_resolution,
                "sigma": self.sigma, "warmup_epochs": self.warmup_epochs, **noise_params(self.noise)}


@register_method("maxup-gauss")
class MaxUpGauss(MaxUp):
    """MaxUp over Gaussian noise for certified robustness (Gong et al., Sec. 4.3): train on the
    worst of m copies x + N(0, sigma^2 I); the first ``warmup_epochs`` epochs are plain Gaussian
    augmentation. ``noise``: laplace or uniform instead of Gaussian noise."""

    def __init__(self, sigma: float, m: int, warmup_epochs: int = 5, noise: str = "gaussian"):
        sigma = check_sigma(sigma, positive=m != 1)  # sigma = 0 only for gauss (plain training)
        super().__init__("none", m, sigma=sigma, warmup_epochs=warmup_epochs, noise=noise)

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "m": self.m, "warmup_epochs": self.warmup_epochs, **noise_params(self.noise)}


__all__ = ["MaxUp", "MaxUpGauss"]
