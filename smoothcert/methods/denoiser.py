"""Denoiser training for denoised smoothing (Salman, Sun, Yang, Kapoor & Kolter, "Denoised
Smoothing: A Provable Defense for Pretrained Classifiers", NeurIPS 2020, Sec. 3.2).

The model being trained is the denoiser D (an image-to-image arch: ``--arch dncnn`` or
``unet``, the default ``dncnn``); the classifier F is part of the method and **frozen**: loaded
once, kept in eval mode with requires_grad off (``Frozen``), outside the Trainer's optimiser,
so neither its weights nor its BatchNorm statistics ever change. Gradients flow through F into
D. With d ~ N(0, sigma^2 I) (or the run's ``noise``):

* ``objective="mse"`` (Eq. 3): mean ||D(x + d) - x||^2, the mean over pixels (as
  ``nn.MSELoss`` in their code); F is not used by the loss.
* ``objective="stability"`` (Eq. 4): CE(F(D(x + d)), f(x)) with f(x) = argmax_c F(x)_c, the
  classifier's prediction on the clean image as the label (not the true label: the denoiser
  is trained to keep F's decisions). Salman et al. get their best numbers by training with MSE
  first and then fine-tuning with stability ("Stab+MSE"): train the stability run with
  ``init`` = the MSE run (``train(..., init=MSE_RUN)``, ``smoothcert train --init MSE_RUN``).

``classifier`` (required) is the run directory (or checkpoint) of the classifier to be
certified behind the denoiser; config.json records it as given together with its weights'
fingerprint, and ``smoothcert certify`` on the denoiser run certifies ``Denoised(D, F)``.
``surrogate``: Salman et al.'s query-access setting -- the stability objective trains through
the surrogate classifier (labels and gradients from it), and the denoiser is certified later in
front of ``classifier``, which training never differentiates (it only measures the logged
accuracies). The logged accuracies are those of ``classifier`` on D(x + d): each epoch's noisy
test accuracy is that of ``Denoised(D, classifier)`` (``evaluate_model``), the training
accuracy that of the classifier trained through against the true labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..noise import get_noise, noise_params, training_noise
from ..validation import ArgumentError, check_sigma
from . import register_method
from .base import Method, TrainContext

OBJECTIVES = ("mse", "stability")


class Frozen(nn.Module):
    """``module`` kept in eval mode for good (``train()`` does not reach it) with requires_grad
    off: a forward through it changes neither its weights nor its BatchNorm statistics, while
    gradients still flow through it to its input."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "Frozen":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def frozen_classifier(value: Any, arg: str) -> tuple[Frozen, str | None, str | None, dict[str, Any] | None]:
    """(frozen classifier, path as given or None, fingerprint, its config or None) from a run
    directory / checkpoint path or an ``nn.Module``; ArgumentError naming ``arg`` otherwise."""
    from ..runs import model_fingerprint

    if isinstance(value, nn.Module):
        return Frozen(value), None, model_fingerprint(value), None
    if not isinstance(value, (str, Path)) or not str(value):
        raise ArgumentError(arg, f"{arg} must be the run directory (or checkpoint) of a classifier, got {value!r}")
    from ..denoisers.loading import load_classifier

    model, config = load_classifier(value, arg)
    return Frozen(model), str(value), model_fingerprint(model), config


@register_method("denoiser")
class DenoiserTraining(Method):
    """Train a denoiser in front of a frozen classifier (module doc)."""

    default_arch = "dncnn"

    def __init__(self, classifier: str, sigma: float, objective: str = "mse", surrogate: str | None = None,
                 noise: str = "gaussian"):
        super().__init__()
        self.sigma = check_sigma(sigma, positive=True)
        if objective not in OBJECTIVES:
            raise ArgumentError("objective", f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        self.objective = objective
        self.noise_name = training_noise(noise, self.sigma)
        self.noise = get_noise(self.noise_name, self.sigma)
        self.classifier, self.classifier_path, self.classifier_fingerprint, self.classifier_config = \
            frozen_classifier(classifier, "classifier")
        self.surrogate_path = self.surrogate_fingerprint = None
        self.surrogate = None
        if surrogate is not None:
            if objective != "stability":
                raise ArgumentError("surrogate", "surrogate: only the stability objective trains through a classifier "
                                                 "(mse needs none)")
            self.surrogate, self.surrogate_path, self.surrogate_fingerprint, _ = frozen_classifier(surrogate,
                                                                                                    "surrogate")

    @property
    def trained_through(self) -> Frozen:
        """The classifier the loss goes through: the surrogate if there is one."""
        return self.surrogate if self.surrogate is not None else self.classifier

    def setup(self, context: TrainContext) -> None:
        """Move the classifiers to the training device; check their classes and input shape."""
        for arg, clf, cfg in (("classifier", self.classifier, self.classifier_config),
                              ("surrogate", self.surrogate, None)):
            if clf is None:
                continue
            clf.to(context.device)
            shape = tuple(getattr(context.train_set, "input_shape", ()) or ())
            if shape:
                from ..denoisers.compose import Denoised

                probe = Denoised(nn.Identity(), clf)
                try:
                    probe.check(shape, context.num_classes)
                except ArgumentError as e:
                    raise ArgumentError(arg, f"{arg}: {str(e).partition(': ')[2]}") from None
            if cfg is not None and list(cfg.get("input_shape") or shape) != list(shape):
                raise ArgumentError(arg, f"{arg}: it was trained on inputs of shape {cfg.get('input_shape')}, the "
                                         f"dataset has {list(shape)}")

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = model(self.noise.perturb(x))
        if out.shape != x.shape:
            raise ArgumentError("arch", f"arch: the denoiser method trains an image-to-image model (dncnn, unet); "
                                        f"this one returns {tuple(out.shape)} for inputs {tuple(x.shape)}")
        clf = self.trained_through
        if self.objective == "mse":
            loss = F.mse_loss(out, x)
            with torch.no_grad():
                self._record_accuracy(clf(out), y)
            return loss
        with torch.no_grad():
            target = clf(x).argmax(1)  # f(x): the classifier's prediction on the clean image
        logits = clf(out)
        self._record_accuracy(logits, y)
        return F.cross_entropy(logits, target)

    def evaluate_model(self, model: nn.Module) -> nn.Module:
        """The logged noisy test accuracy is that of the classifier behind the denoiser."""
        from ..denoisers.compose import Denoised

        return Denoised(model, self.classifier)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sigma": self.sigma, "objective": self.objective, "classifier": self.classifier_path,
                               "classifier_fingerprint": self.classifier_fingerprint}
        if self.surrogate is not None:
            out.update(surrogate=self.surrogate_path, surrogate_fingerprint=self.surrogate_fingerprint)
        return {**out, **noise_params(self.noise_name)}


__all__ = ["DenoiserTraining", "Frozen", "OBJECTIVES", "frozen_classifier"]
