"""``Denoised(denoiser, classifier)``: denoised smoothing's base classifier, an ordinary model.

Salman, Sun, Yang, Kapoor & Kolter ("Denoised Smoothing: A Provable Defense for Pretrained
Classifiers", NeurIPS 2020) certify a classifier F that was never trained on noise by smoothing
F o D, a denoiser D in front of it. ``Denoised`` is that composition: ``classifier(denoiser(x))``
for x in [0, 1] pixel space. ``Smooth`` adds the noise, so the denoiser sees x + d and every
certification mode (fixed N, sequential, two-sided, every noise and norm) works on it unchanged:

    Smooth(Denoised(dncnn, lenet), num_classes=10, sigma=0.25).certify(x, n0, n, alpha, batch)

The guarantee is that of randomized smoothing for the base classifier F o D: nothing about the
denoiser needs to hold for it (a bad denoiser only lowers pA, hence the radii).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.fx
from torch import nn

from ..validation import ArgumentError


def same_shape(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` if the denoiser's output has its input's shape; else a one-line ArgumentError
    naming ``denoiser``. A leaf for torch.fx, so the composition stays traceable (BatchNorm folding)."""
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ArgumentError("denoiser", f"denoiser: it returned {got} for an input of shape {tuple(x.shape)}; a "
                                        "denoiser must return an image of its input's shape")
    return out


torch.fx.wrap("same_shape")


class Denoised(nn.Module):
    """``classifier(denoiser(x))``: an image-to-image ``denoiser`` ([0, 1] pixels in and out, same
    shape) in front of a ``classifier`` (pixels -> (B, K) logits).

    ``input_shape`` (C, H, W) and ``num_classes``, when given, are checked at once on one zero
    image (``check``); the shape check also runs on every forward. Both modules are submodules:
    ``.to``, ``.eval`` and ``state_dict`` (``denoiser.*``, ``classifier.*``) cover both, and
    ``Smooth`` runs its own copy (eval mode, BatchNorm folded in both). A composition of two
    eval-mode modules starts in eval mode."""

    def __init__(self, denoiser: nn.Module, classifier: nn.Module, *, input_shape: Sequence[int] | None = None,
                 num_classes: int | None = None):
        super().__init__()
        for name, m in (("denoiser", denoiser), ("classifier", classifier)):
            if not isinstance(m, nn.Module):
                raise ArgumentError(name, f"{name} must be a torch.nn.Module, got {type(m).__name__}")
        self.denoiser = denoiser
        self.classifier = classifier
        self.training = denoiser.training or classifier.training  # eval parts make an eval whole (Smooth folds BN)
        if input_shape is not None or num_classes is not None:
            self.check(input_shape, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(same_shape(self.denoiser(x), x))

    @torch.no_grad()
    def check(self, input_shape: Sequence[int] | None, num_classes: int | None = None) -> None:
        """Run one zero image of ``input_shape`` through both modules in eval mode (every module's
        train/eval flag is restored afterwards: BatchNorm statistics are untouched) and raise a
        one-line ArgumentError if the denoiser changes the shape (``denoiser``) or the classifier
        does not return ``num_classes`` logits (``num_classes``)."""
        if input_shape is None:
            raise ArgumentError("input_shape", "input_shape: give the (C, H, W) of the inputs to check num_classes")
        flags = [(m, m.training) for m in self.modules()]
        try:
            self.eval()
            p = next(self.parameters(), None)
            x = torch.zeros(1, *[int(s) for s in input_shape], device=p.device if p is not None else None)
            out = self(x)
        finally:
            for m, was in flags:
                m.training = was
        if num_classes is not None and (out.dim() != 2 or out.shape[1] != int(num_classes)):
            raise ArgumentError("num_classes", f"num_classes: the classifier returns {tuple(out.shape[1:])} outputs "
                                               f"per input, the run has {int(num_classes)} classes")


__all__ = ["Denoised", "same_shape"]
