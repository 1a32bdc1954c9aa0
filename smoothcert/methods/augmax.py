"""AugMax (Wang et al., "AugMax: Adversarial Composition of Random Augmentations for Robust
Training", NeurIPS 2021): AugMix's chains, mixed adversarially.

For fixed chains chain_1..chain_k of an image x, the AugMax image (Eq. 2-3) is

    x_augmax = m* x + (1 - m*) sum_i w*_i chain_i(x),
    (w*, m*) = argmax_{w = softmax(p), m in [0, 1]} CE(f(m x + (1 - m) sum_i w_i chain_i(x)), y),

found by ``steps`` steps of sign-gradient ascent of size ``step_size`` on (p, m) from a random
start (p = log w0 with w0 ~ Dirichlet(1), m0 ~ U(0, 1)); m is clipped to [0, 1] after each step.
During the search the model is in eval mode with its parameters frozen; both states are restored
afterwards. The training objective (Eq. 4) is

    L = CE(f(x), y) + lambda * JS(f(x), f(x_augmix), f(x_augmax)),

with the AugMax images routed through the "adv" branch of the DuBN layers of the model
(``--norm dubn|dubin``), in the search and in the training forward.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import frozen_eval
from ..losses import js_divergence
from ..models.dubin import dual_bn_route, has_dual_bn
from ..validation import check_float, check_int
from . import register_method
from .augmix import augmix, augmix_chains, check_mixing_params, mix, sample_mixing
from .base import Method
from .common import unwrap


def random_start(batch: int, width: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """AugMax's random start: logits p (B, k) with softmax(p) ~ Dirichlet(1) and m ~ U(0, 1) (B,)."""
    w, m = sample_mixing(batch, width, generator, device)
    return w.log(), m


def augmax_search(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chains: torch.Tensor, steps: int = 5,
                  step_size: float = 0.1, p_init: torch.Tensor | None = None, m_init: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The AugMax mixing of ``chains`` (k, B, C, H, W) for images ``x`` with labels ``y``: returns
    (w, m), w = softmax(p) of shape (B, k) on the simplex and m in [0, 1] of shape (B,), after
    ``steps`` sign-gradient ascent steps on the summed cross-entropy (per-image gradients: the
    model is in eval mode). Starts from (p_init, m_init), or from ``random_start``."""
    steps = check_int("steps", steps, 0)
    step_size = check_float("step_size", step_size, 0.0, lo_open=True)
    B, k = x.shape[0], chains.shape[0]
    if p_init is None or m_init is None:
        p0, m0 = random_start(B, k, generator, x.device)
    p = (p0 if p_init is None else p_init).detach().to(x.device, torch.float32).clone()
    m = (m0 if m_init is None else m_init).detach().to(x.device, torch.float32).clone().clamp_(0, 1)
    chains = chains.detach()
    model = unwrap(model)  # the search's forwards need no DDP gradient hooks or buffer broadcasts
    route = dual_bn_route(model, "adv") if has_dual_bn(model) else nullcontext()
    with frozen_eval(model), route, torch.enable_grad():
        for _ in range(steps):
            p.requires_grad_(True)
            m.requires_grad_(True)
            x_mix = mix(x, chains, F.softmax(p, dim=1), m)
            loss = F.cross_entropy(model(x_mix), y, reduction="sum")
            grad_p, grad_m = torch.autograd.grad(loss, [p, m])
            with torch.no_grad():
                p = p + step_size * grad_p.sign()
                m = (m + step_size * grad_m.sign()).clamp_(0, 1)
    return F.softmax(p.detach(), dim=1), m.detach()


@register_method("augmax")
class AugMax(Method):
    """L = CE(f(x), y) + js_lambda * JS(f(x), f(x_augmix), f(x_augmax)) (AugMax, Eq. 4).

    ``augmax_steps`` sign-gradient steps of size ``augmax_step_size`` find the AugMax mixing; the
    chains are ``mixture_width`` (k) chains of depth 1..``max_depth`` at op ``severity``. Clean,
    AugMix and AugMax images share one forward; when the model has DuBN layers the clean and
    AugMix images are normalised by the "clean" branch and the AugMax images by the "adv" one."""

    def __init__(self, js_lambda: float = 10.0, augmax_steps: int = 5, augmax_step_size: float = 0.1,
                 mixture_width: int = 3, max_depth: int = 3, severity: float = 3):
        super().__init__()
        check_mixing_params(js_lambda, mixture_width, max_depth, severity)
        self.js_lambda = float(js_lambda)
        self.augmax_steps = check_int("augmax_steps", augmax_steps, 0)
        self.augmax_step_size = check_float("augmax_step_size", augmax_step_size, 0.0, lo_open=True)
        self.mixture_width, self.max_depth, self.severity = int(mixture_width), int(max_depth), severity

    def augmax(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """AugMax images for a batch: fresh chains, adversarial mixing (no autograd graph)."""
        chains = augmix_chains(x, self.mixture_width, self.max_depth, self.severity)
        w, m = augmax_search(model, x, y, chains, self.augmax_steps, self.augmax_step_size)
        with torch.no_grad():
            return mix(x, chains, w, m)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_augmix = augmix(x, self.mixture_width, self.max_depth, self.severity)
        x_augmax = self.augmax(model, x, y)
        batch = torch.cat([x, x_augmix, x_augmax])
        # one forward (as DDP wants); with DuBN layers the AugMax third takes the "adv" branch
        route = dual_bn_route(model, 2 * x.shape[0]) if has_dual_bn(model) else nullcontext()
        with route:
            logits_clean, logits_augmix, logits_augmax = model(batch).chunk(3)
        self._record_accuracy(logits_clean, y)
        js = js_divergence(logits_clean, logits_augmix, logits_augmax)
        return F.cross_entropy(logits_clean, y) + self.js_lambda * js

    def params(self) -> dict[str, Any]:
        return {"js_lambda": self.js_lambda, "augmax_steps": self.augmax_steps,
                "augmax_step_size": self.augmax_step_size, "mixture_width": self.mixture_width,
                "max_depth": self.max_depth, "severity": self.severity}
