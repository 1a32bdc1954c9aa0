"""AugMix (Hendrycks et al., ICLR 2020): mixing augmentation chains, with a Jensen–Shannon
consistency loss.

An AugMix image (Algorithm 1) is x_augmix = m * x + (1 - m) * sum_i w_i chain_i(x) with k =
``mixture_width`` chains of depth d ~ U{1..max_depth} of the ops in ``smoothcert.imageops``,
w ~ Dirichlet(1, ..., 1) and m ~ Beta(1, 1). The objective (Eq. 4) is

    L = CE(f(x), y) + lambda * JS(f(x), f(x_augmix)).

The chains, weights and blend factor are drawn per image; the building blocks are shared with
AugMax, which optimises (w, m) instead of drawing them.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import imageops
from ..losses import js_divergence
from ..validation import check_float, check_int
from . import register_method
from .base import Method


def augmix_chains(x: torch.Tensor, width: int = 3, max_depth: int = 3, severity: float = 3,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """k = ``width`` independent augmentation chains of every image: a (k, B, C, H, W) tensor."""
    width = check_int("width", width, 1)
    with torch.no_grad():
        return torch.stack([imageops.random_chain(x, severity, max_depth, generator) for _ in range(width)])


def sample_mixing(batch: int, width: int, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """AugMix's random mixing: w ~ Dirichlet(1, ..., 1) of shape (B, k) and m ~ Beta(1, 1) of shape
    (B,), drawn on the CPU (normalised Exp(1) variables for the Dirichlet) and moved to ``device``."""
    e = torch.log1p(-torch.rand(batch, width, generator=generator)).neg_().clamp_(min=1e-12)  # Exp(1)
    w = e / e.sum(1, keepdim=True)
    m = torch.rand(batch, generator=generator)
    return w.to(device), m.to(device)


def mix(x: torch.Tensor, chains: torch.Tensor, w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """m * x + (1 - m) * sum_i w_i chain_i, per image (differentiable in w and m).
    ``chains`` (k, B, C, H, W), ``w`` (B, k), ``m`` (B,)."""
    if chains.dim() != 5 or chains.shape[1:] != x.shape or w.shape != (x.shape[0], chains.shape[0]) or m.shape != (x.shape[0],):
        raise ValueError(f"mix: shapes do not agree: x {tuple(x.shape)}, chains {tuple(chains.shape)}, "
                         f"w {tuple(w.shape)}, m {tuple(m.shape)}")
    mixed = torch.einsum("bk,kbchw->bchw", w.to(chains.dtype), chains)
    m = m.to(x.dtype).view(-1, 1, 1, 1)
    return m * x + (1 - m) * mixed


def augmix(x: torch.Tensor, width: int = 3, max_depth: int = 3, severity: float = 3,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """One AugMix image per input image (Algorithm 1), in [0, 1]."""
    chains = augmix_chains(x, width, max_depth, severity, generator)
    w, m = sample_mixing(x.shape[0], width, generator, x.device)
    with torch.no_grad():
        return mix(x, chains, w, m)


def check_mixing_params(js_lambda: float, mixture_width: int, max_depth: int, severity: float) -> None:
    """ValueError naming the first bad argument of an AugMix/AugMax constructor."""
    check_float("js_lambda", js_lambda, 0.0)
    check_int("mixture_width", mixture_width, 1)
    check_int("max_depth", max_depth, 1)
    check_float("severity", severity, 1.0, imageops.MAX_SEVERITY)


@register_method("augmix")
class AugMix(Method):
    """L = CE(f(x), y) + js_lambda * JS(f(x), f(x_augmix)) (AugMix, Eq. 4, one AugMix view).

    ``mixture_width`` chains (k) of depth 1..``max_depth`` at op ``severity`` (AugMix's defaults
    3, 3, 3). Clean and AugMix images go through the model in one batch."""

    def __init__(self, js_lambda: float = 12.0, mixture_width: int = 3, max_depth: int = 3, severity: float = 3):
        super().__init__()
        check_mixing_params(js_lambda, mixture_width, max_depth, severity)
        self.js_lambda = float(js_lambda)
        self.mixture_width, self.max_depth, self.severity = int(mixture_width), int(max_depth), severity

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_augmix = augmix(x, self.mixture_width, self.max_depth, self.severity)
        logits_clean, logits_augmix = model(torch.cat([x, x_augmix])).chunk(2)
        self._record_accuracy(logits_clean, y)
        return F.cross_entropy(logits_clean, y) + self.js_lambda * js_divergence(logits_clean, logits_augmix)

    def params(self) -> dict[str, Any]:
        return {"js_lambda": self.js_lambda, "mixture_width": self.mixture_width, "max_depth": self.max_depth,
                "severity": self.severity}
