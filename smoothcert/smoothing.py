"""The smoothed classifier g(x) = argmax_c P(f(x + eps) = c), eps drawn from a smoothing noise
(``smoothcert.noise``: gaussian N(0, sigma^2 I) by default, laplace, uniform).

``Smooth`` is the Cohen-compatible façade of Cohen, Rosenfeld & Kolter's ``core.Smooth``
("Certified Adversarial Robustness via Randomized Smoothing", ICML 2019): a sampler
(``smoothcert.sampling.Sampler``: the model copy, the buffers, the chunking, one ``counts``
call) and the procedures over it (``smoothcert.procedures``: CERTIFY, PREDICT and their
sequential forms, each stating its algorithm and guarantee):

* ``certify``: n0 samples select cA, n fresh samples give pA_lower, the one-sided (1 - alpha)
  Clopper–Pearson lower bound on P(f(x + eps) = cA); abstain if pA_lower < 1/2, else return cA
  with the noise's radius for pA_lower (gaussian, l2: R = sigma Phi^-1(pA_lower)). With
  probability >= 1 - alpha, g(x + delta) = cA for every ||delta|| < R.
* ``certify_sequential``: CERTIFY whose estimation stops as soon as the certificate cannot
  improve within n_max samples; an anytime-valid confidence sequence keeps the guarantee.
* ``predict``: n samples, top two counts nA >= nB; abstain unless the two-sided binomial test of
  nA ~ Bin(nA + nB, 1/2) has p-value <= alpha. A class other than g(x) with probability <= alpha.

Every ``*_batch`` form takes a (B, C, H, W) batch and returns tensors; the single-input forms
return Python numbers as ``core.Smooth`` does.

Compatibility names, re-exported from their homes: ``sample_counts``, the former name of the free
function ``sampling.draw_counts(model, xs, num, noise, num_classes, batch_size, ...)`` (the method
``Smooth.sample_counts(xs, num, batch_size)`` is another thing: this classifier's counts);
``certificate`` (``procedures``); ``Workspace``, ``model_device``, ``model_dtype`` (``sampling``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import procedures
from .noise import Noise
from .procedures import ABSTAIN, certificate
from .sampling import Sampler, Workspace, draw_counts, model_device, model_dtype
from .sequential import DEFAULT_SEQUENCE

sample_counts = draw_counts  # the former name of the free function (kept for compatibility)


def _sampler_attribute(name: str) -> property:
    return property(lambda self: getattr(self.sampler, name), lambda self, value: setattr(self.sampler, name, value),
                    doc=f"The sampler's ``{name}`` (``sampling.Sampler``).")


class Smooth:
    """A smoothed classifier around ``base_classifier`` (a model mapping (B, C, H, W) in pixel
    space to (B, num_classes) logits) with ``noise`` (a name from ``noise.NOISES`` or a
    ``noise.Noise``) of per-coordinate standard deviation ``sigma``. Compatible with Cohen et
    al.'s ``core.Smooth`` (``Smooth(base_classifier, num_classes, sigma)`` is Gaussian smoothing).

    Inputs must be floating point (pixels in [0, 1]); they are converted to the dtype of the
    model's parameters. Integer and bool inputs, uint8 images included, are refused (convert
    uint8 images with ``x.float() / 255``), and so are inputs with NaN or infinite values.

    The keyword-only options (``amp_dtype``, ``channels_last``, ``compile``, ``fold_bn``,
    ``chunk_size``, ``max_batch``, ``seed``) are the sampler's, ``sampling.Sampler``: it runs an
    inference copy of ``base_classifier`` and never changes the caller's model; build a new
    ``Smooth`` (cheap) to certify new weights. ``batch_size`` is the unit of the seeded noise
    stream (it changes results) and the memory bound; the forward chunk changes speed only.
    ``sampler`` is that sampler; ``noise``, ``num_classes``, ``device``, ``dtype``, ``generator``,
    ``inference_info`` and the options are its attributes, read and written through this object.
    """

    ABSTAIN = ABSTAIN

    def __init__(
        self,
        base_classifier: nn.Module,
        num_classes: int,
        sigma: float | None,
        noise: str | Noise = "gaussian",
        *,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
        fold_bn: bool | None = None,
        chunk_size: int | None = None,
        max_batch: int | str | None = None,
        seed: int | None = None,
    ):
        self.sampler = Sampler(base_classifier, num_classes, noise, sigma, amp_dtype=amp_dtype,
                               channels_last=channels_last, compile=compile, fold_bn=fold_bn, chunk_size=chunk_size,
                               max_batch=max_batch, seed=seed)
        self.base_classifier = base_classifier
        self.sigma = self.noise.sigma

    num_classes = _sampler_attribute("num_classes")
    noise = _sampler_attribute("noise")
    device = _sampler_attribute("device")
    dtype = _sampler_attribute("dtype")
    generator = _sampler_attribute("generator")
    amp_dtype = _sampler_attribute("amp_dtype")
    channels_last = _sampler_attribute("channels_last")
    chunk_size = _sampler_attribute("chunk_size")
    max_batch = _sampler_attribute("max_batch")
    inference_info = _sampler_attribute("inference_info")

    @property
    def model(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The inference copy the sampler runs (see ``inference.prepare_model``)."""
        return self.sampler.model

    def sample_counts(
        self, xs: torch.Tensor, num: int, batch_size: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, num_classes) vote counts on the device for a batch ``xs`` (``Sampler.counts``)."""
        return self.sampler.counts(self.sampler.batch(xs, "xs"), num, batch_size, generator)

    def check_options(self, norm: str | None = None, bound: str = "one-sided", dim: int | None = None,
                      sequential: bool = False) -> tuple[str, str]:
        """(norm, bound) validated for this noise (``procedures.check_options``)."""
        return procedures.check_options(self.noise, norm, bound, dim, sequential)

    # -- CERTIFY -------------------------------------------------------------------------
    def certify_batch(self, xs: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                      generator: torch.Generator | None = None, *, norm: str | None = None,
                      bound: str = "one-sided") -> tuple[torch.Tensor, torch.Tensor]:
        """CERTIFY each input of ``xs``: (predictions, radii) (``procedures.certify``)."""
        return procedures.certify(self.sampler, xs, n0, n, alpha, batch_size, generator, norm=norm, bound=bound)

    def certify_counts_batch(self, xs: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                             generator: torch.Generator | None = None, *, norm: str | None = None,
                             bound: str = "one-sided") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``certify_batch`` that also returns nA, each input's estimation count of its selected
        class (of ``n``): (predictions, radii, nA). The same draws, the same certificates."""
        return procedures.certify(self.sampler, xs, n0, n, alpha, batch_size, generator, norm=norm, bound=bound,
                                  with_counts=True)

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                generator: torch.Generator | None = None, *, norm: str | None = None,
                bound: str = "one-sided") -> tuple[int, float]:
        """CERTIFY one input ``x`` (C, H, W): (cA, radius) or (ABSTAIN, 0.0). With probability
        >= 1 - alpha, g is constant on the ``norm`` ball of that radius around x (see
        ``procedures.certify`` for ``norm`` and ``bound``)."""
        pred, radius = self.certify_batch(self.sampler.batch(x, "x", single=True), n0, n, alpha, batch_size,
                                          generator, norm=norm, bound=bound)
        return int(pred[0]), float(radius[0])

    # -- PREDICT -------------------------------------------------------------------------
    def predict_batch(self, xs: torch.Tensor, n: int, alpha: float, batch_size: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """PREDICT each input of ``xs``: (B,) classes or ABSTAIN (``procedures.predict``)."""
        return procedures.predict(self.sampler, xs, n, alpha, batch_size, generator)

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int,
                generator: torch.Generator | None = None) -> int:
        """PREDICT one input ``x`` (C, H, W): the top class, or ABSTAIN. Returns a class other than
        g(x) with probability at most alpha."""
        return int(self.predict_batch(self.sampler.batch(x, "x", single=True), n, alpha, batch_size, generator)[0])

    # -- sequential CERTIFY --------------------------------------------------------------
    def certify_sequential_batch(self, xs: torch.Tensor, n0: int, n_max: int, alpha: float, batch_size: int,
                                 radii: Sequence[float] | np.ndarray | None = None, tol: float | None = None,
                                 generator: torch.Generator | None = None, *, norm: str | None = None,
                                 bound: str = "one-sided", sequence: str = DEFAULT_SEQUENCE
                                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sequential CERTIFY of each input of ``xs``: (predictions, radii, n_used)
        (``procedures.certify_sequential``; ``sequence`` names the confidence sequence)."""
        return procedures.certify_sequential(self.sampler, xs, n0, n_max, alpha, batch_size, radii, tol, generator,
                                             norm=norm, bound=bound, sequence=sequence)

    def certify_sequential(self, x: torch.Tensor, n0: int, n_max: int, alpha: float, batch_size: int,
                           radii: Sequence[float] | np.ndarray | None = None, tol: float | None = None,
                           generator: torch.Generator | None = None, *, norm: str | None = None,
                           bound: str = "one-sided", sequence: str = DEFAULT_SEQUENCE) -> tuple[int, float, int]:
        """Sequential CERTIFY of one input ``x`` (C, H, W): (cA, radius, n_used) or
        (ABSTAIN, 0.0, n_used)."""
        pred, radius, n_used = self.certify_sequential_batch(
            self.sampler.batch(x, "x", single=True), n0, n_max, alpha, batch_size, radii, tol, generator,
            norm=norm, bound=bound, sequence=sequence)
        return int(pred[0]), float(radius[0]), int(n_used[0])

    # -- sequential PREDICT --------------------------------------------------------------
    def predict_sequential_batch(self, xs: torch.Tensor, n_max: int, alpha: float, batch_size: int,
                                 generator: torch.Generator | None = None, *, sequence: str = DEFAULT_SEQUENCE
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """PREDICT with early stopping for each input of ``xs``: (predictions, n_used)
        (``procedures.predict_sequential``; ``sequence`` names the anytime-valid test)."""
        return procedures.predict_sequential(self.sampler, xs, n_max, alpha, batch_size, generator, sequence=sequence)

    def predict_sequential(self, x: torch.Tensor, n_max: int, alpha: float, batch_size: int,
                           generator: torch.Generator | None = None, *, sequence: str = DEFAULT_SEQUENCE
                           ) -> tuple[int, int]:
        """Sequential PREDICT of one input ``x`` (C, H, W): (class or ABSTAIN, n_used)."""
        pred, n_used = self.predict_sequential_batch(self.sampler.batch(x, "x", single=True), n_max, alpha,
                                                     batch_size, generator, sequence=sequence)
        return int(pred[0]), int(n_used[0])


__all__ = ["ABSTAIN", "Sampler", "Smooth", "Workspace", "certificate", "draw_counts", "model_device", "model_dtype",
           "sample_counts"]
