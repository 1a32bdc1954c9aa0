"""The smoothed classifier g(x) = argmax_c P(f(x + eps) = c), eps drawn from a smoothing noise
(``smoothcert.noise``: gaussian N(0, sigma^2 I) by default, laplace, uniform).

Implements CERTIFY and PREDICT of Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness
via Randomized Smoothing" (ICML 2019), Section 3.2 / Pseudocode:

* ``certify``: draw n0 noisy samples and take the top class cA (selection); draw n *fresh*
  samples and count nA votes for cA (estimation); pA_lower is the one-sided (1 - alpha)
  Clopper–Pearson lower bound on P(f(x + eps) = cA). If pA_lower < 1/2 abstain, else return cA
  with the radius the noise gives for pA_lower in the chosen norm (gaussian, l2:
  R = sigma * Phi^-1(pA_lower)). With probability >= 1 - alpha over the samples,
  g(x + delta) = cA for every ||delta|| < R. ``bound="two-sided"`` also bounds the runner-up
  class from above (Theorem 1 without pB = 1 - pA; see ``Smooth.certify_batch``).
* ``predict``: draw n samples, take the top two counts nA >= nB and return the top class unless
  the two-sided binomial test of nA ~ Bin(nA + nB, 1/2) has p-value > alpha (then abstain). The
  probability of returning a class other than g(x) is at most alpha.

All Monte Carlo work goes through ``sample_counts`` -- the one sampler of the toolkit. It draws
noise on the model's device into a reused buffer, runs the model under ``torch.inference_mode``,
counts votes on the device with ``torch.bincount`` and packs the samples of several inputs into
one forward batch. The host sees the counts once per call.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import numpy as np
import torch
from torch import nn

from .noise import Noise, check_bound, get_noise
from .stats import abstain_test_pvalue, clopper_pearson_lower, clopper_pearson_upper
from .validation import ArgumentError, check_alpha, check_int

ABSTAIN = -1


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: Callable[..., torch.Tensor]) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (or buffer); torch's default
    dtype for a model without any (or a plain callable). Inputs are converted to it."""
    if isinstance(model, nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            if t.is_floating_point():
                return t.dtype
    return torch.get_default_dtype()


def sample_counts(
    model: Callable[[torch.Tensor], torch.Tensor],
    xs: torch.Tensor,
    num: int,
    noise: Noise,
    num_classes: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    buffer: torch.Tensor | None = None,
) -> torch.Tensor:
    """Vote counts of f over ``num`` noisy copies of each input: a (B, num_classes) int64 tensor
    on the inputs' device.

    ``xs`` is (B, *shape) on the model's device. Samples are laid out input-major (input i owns
    flat indices [i * num, (i + 1) * num)) and cut into forward batches of ``batch_size`` rows,
    so a forward batch may hold the samples of several inputs. ``buffer`` (optional, at least
    ``batch_size`` rows of xs's sample shape) is reused for the noisy batch.
    """
    num = check_int("num", num, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    if xs.dim() < 2:
        raise ValueError(f"xs must be a batch (B, C, ...), got shape {tuple(xs.shape)}")
    B, shape = xs.shape[0], tuple(xs.shape[1:])
    device = xs.device
    rows = min(batch_size, B * num)
    fmt = torch.channels_last if (channels_last and len(shape) == 3) else torch.contiguous_format
    if (
        buffer is None
        or buffer.shape[0] < rows
        or tuple(buffer.shape[1:]) != shape
        or buffer.device != device
        or buffer.dtype != xs.dtype
    ):
        buffer = torch.empty((rows, *shape), device=device, dtype=xs.dtype, memory_format=fmt)
    counts = torch.zeros(B * num_classes, dtype=torch.long, device=device)
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    )
    total = B * num

    # -- soundness checks (issue 12): the logits' shape on the first forward of the call, a
    # non-finite flag over every forward batch (kept on the device), counts summing to num.
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    shape_checked = False

    def forward(batch: torch.Tensor) -> torch.Tensor:
        nonlocal shape_checked
        logits = model(batch)
        if not shape_checked:
            if logits.dim() != 2 or logits.shape[0] != batch.shape[0] or logits.shape[1] != num_classes:
                raise ArgumentError("model", f"model returned logits of shape {tuple(logits.shape)} for "
                                             f"{batch.shape[0]} inputs; expected ({batch.shape[0]}, {num_classes}) "
                                             f"for num_classes={num_classes}")
            shape_checked = True
        nonfinite.logical_or_(~torch.isfinite(logits).all())
        return logits

    with torch.inference_mode(), autocast:
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            batch = noise.sample_(buffer[: stop - start], generator)
            first, last = start // num, (stop - 1) // num
            if first == last:  # one input in this batch: broadcast, count directly
                batch.add_(xs[first])
                preds = forward(batch).argmax(1)
                seg = counts[first * num_classes : (first + 1) * num_classes]
                seg.add_(torch.bincount(preds, minlength=num_classes))
            else:
                for i in range(first, last + 1):
                    a, b = max(start, i * num) - start, min(stop, (i + 1) * num) - start
                    batch[a:b].add_(xs[i])
                preds = forward(batch).argmax(1)
                owner = torch.arange(start, stop, device=device).div_(num, rounding_mode="floor") - first
                keys = owner * num_classes + preds
                seg = counts[first * num_classes : (last + 1) * num_classes]
                seg.add_(torch.bincount(keys, minlength=(last - first + 1) * num_classes))
    counts = counts.view(B, num_classes)
    bad_logits, bad_sums = torch.stack([nonfinite, counts.sum(1).ne(num).any()]).tolist()
    if bad_logits:
        raise ArgumentError("model", "model returned non-finite logits (NaN or inf): no votes can be counted")
    if bad_sums:
        raise AssertionError(f"sample_counts: some input's counts do not sum to num={num}")
    return counts


def certificate(noise: Noise, cA: np.ndarray, nA: np.ndarray, nB: np.ndarray, n: int, alpha: float, *,
                norm: str, bound: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The last step of CERTIFY: from the selected classes ``cA``, their estimation counts ``nA``
    and the runner-up counts ``nB`` (out of ``n``), the (predictions, radii) as int64 / float64
    arrays (``ABSTAIN`` and 0 where abstained). See ``Smooth.certify_batch`` for the bounds."""
    if bound == "one-sided":
        pA_lower = clopper_pearson_lower(nA, n, alpha)
        certified = pA_lower >= 0.5
        radius = noise.radius(pA_lower, norm, dim)
    else:
        pA_lower = clopper_pearson_lower(nA, n, alpha / 2)
        pB_upper = np.minimum(clopper_pearson_upper(nB, n, alpha / 2), 1.0 - pA_lower)
        certified = pA_lower >= pB_upper
        radius = noise.radius_two_sided(pA_lower, pB_upper, norm, dim)
    pred = np.where(certified, cA, ABSTAIN).astype(np.int64)
    return pred, np.where(certified, radius, 0.0).astype(np.float64)


class Smooth:
    """A smoothed classifier around ``base_classifier`` (a model mapping (B, C, H, W) in pixel
    space to (B, num_classes) logits) with ``noise`` (a name from ``noise.NOISES`` or a
    ``noise.Noise``) of per-coordinate standard deviation ``sigma``. Compatible with Cohen et
    al.'s ``core.Smooth`` (``Smooth(base_classifier, num_classes, sigma)`` is Gaussian smoothing).

    Inputs must be floating point (pixels in [0, 1]); they are converted to the dtype of the
    model's parameters. Integer and bool inputs, uint8 images included, are refused (convert
    uint8 images with ``x.float() / 255``), and so are inputs with NaN or infinite values.
    The caller's model is never modified (its train/eval mode is restored after sampling).

    Options beyond the original (all keyword-only): ``amp_dtype`` (e.g. torch.bfloat16 on CUDA),
    ``channels_last`` (default on: the noisy batches use the channels-last memory format, which
    changes only float rounding; see experiments/bench_certify.py), ``compile`` (wrap the model
    in ``torch.compile``) and ``seed`` (a default generator so that reruns are identical; a
    ``generator`` passed to a call takes precedence).
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
        seed: int | None = None,
    ):
        if not isinstance(base_classifier, nn.Module) and not callable(base_classifier):
            raise ArgumentError("base_classifier", "base_classifier must be an nn.Module or a callable")
        num_classes = check_int("num_classes", num_classes, 2)
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.noise = get_noise(noise, sigma)
        self.sigma = self.noise.sigma
        self.device = model_device(base_classifier) if isinstance(base_classifier, nn.Module) else torch.device("cpu")
        self.dtype = model_dtype(base_classifier)
        self.amp_dtype = amp_dtype
        self.channels_last = True if channels_last is None else bool(channels_last)
        self._forward = torch.compile(base_classifier) if compile else base_classifier
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self._buffer: torch.Tensor | None = None

    # -- the sampler ---------------------------------------------------------------------
    def sample_counts(
        self, xs: torch.Tensor, num: int, batch_size: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, num_classes) vote counts on the device for a batch ``xs`` (see ``sample_counts``)."""
        xs = self._as_batch(xs, "xs", single=False)
        model = self.base_classifier
        was_training = isinstance(model, nn.Module) and model.training
        if was_training:
            model.eval()
        try:
            counts = sample_counts(
                self._forward,
                xs,
                num,
                self.noise,
                self.num_classes,
                batch_size,
                generator if generator is not None else self.generator,
                amp_dtype=self.amp_dtype,
                channels_last=self.channels_last,
                buffer=self._buffer,
            )
        finally:
            if was_training:
                model.train()
        return counts

    def _as_batch(self, x: torch.Tensor, name: str, single: bool) -> torch.Tensor:
        """``x`` (one input if ``single``, else a batch) as a (B, ...) batch on the model's device
        in the model's dtype. ArgumentError naming ``name`` for a non-tensor, a wrong rank, a
        non-floating dtype or non-finite values (naming the input's index in the batch)."""
        if not isinstance(x, torch.Tensor):
            raise ArgumentError(name, f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if single:
            if x.dim() < 1:
                raise ArgumentError(name, f"{name} must have shape (C, H, W) (one input), got {tuple(x.shape)}")
            x = x.unsqueeze(0)
        elif x.dim() < 2:
            raise ArgumentError(name, f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ArgumentError(name, f"{name} has dtype {x.dtype}: inputs must be floating point with pixels in "
                                      f"[0, 1] (for uint8 images use x.float() / 255)")
        x = x.to(device=self.device, dtype=self.dtype)
        bad = ~torch.isfinite(x.flatten(1)).all(1)
        if bool(bad.any()):
            where = "" if single else f"[{int(bad.nonzero()[0, 0])}]"
            raise ArgumentError(name, f"{name}{where} has non-finite values (NaN or inf) in {self.dtype}")
        return x

    def check_options(self, norm: str | None = None, bound: str = "one-sided", dim: int | None = None
                      ) -> tuple[str, str]:
        """(norm, bound) validated for this noise: None is the noise's natural norm.
        ArgumentError("norm") for a norm the noise cannot certify, ArgumentError("bound") for an
        unknown bound or a two-sided bound the noise has no certificate for."""
        norm = self.noise.check_norm(norm)
        bound = check_bound(bound)
        d = 1 if dim is None else dim
        if bound == "two-sided":
            self.noise.radius_two_sided(0.5, 0.5, norm, d)
        else:
            self.noise.radius(0.5, norm, d)
        return norm, bound

    # -- CERTIFY -------------------------------------------------------------------------
    def certify_batch(
        self,
        xs: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
        *,
        norm: str | None = None,
        bound: str = "one-sided",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CERTIFY for each input of ``xs`` (B, C, H, W): returns (predictions, radii), a (B,)
        int64 tensor (``ABSTAIN`` where abstained) and a (B,) float64 tensor (0 where abstained).

        Selection: the top class cA of n0 noisy samples. Estimation: n fresh samples.
        ``bound="one-sided"`` (Cohen et al., 2019, CERTIFY): pA_lower is the one-sided (1 - alpha)
        Clopper–Pearson lower bound on P(f(x + eps) = cA); abstain if pA_lower < 1/2, else
        return cA with radius ``noise.radius(pA_lower)``. ``bound="two-sided"`` (Theorem 1
        without pB = 1 - pA): pA_lower at level alpha / 2 and pB_upper, the (1 - alpha / 2) upper
        bound on the runner-up class's count nB among the estimation samples (Bonferroni: both
        hold with probability >= 1 - alpha); abstain if pA_lower < pB_upper, else radius
        ``noise.radius_two_sided(pA_lower, pB_upper)``. The runner-up's bound covers every other
        class: the class c* with the largest pB has count <= the runner-up count, and the bound
        grows with the count. As nB <= n - nA and the bounds are monotone, pB_upper <= 1 - pA_lower,
        so the two-sided radius is never below the one-sided radius at level alpha / 2 (the cap
        at 1 - pA_lower in ``certificate`` only guards float rounding). In both cases, with
        probability >= 1 - alpha, g(x + delta) = cA for every ||delta||_norm < radius (``norm``
        None: the noise's natural norm)."""
        n0 = check_int("n0", n0, 1)
        n = check_int("n", n, 1)
        alpha = check_alpha(alpha)
        xs = self._as_batch(xs, "xs", single=False)
        dim = int(xs[0].numel())
        norm, bound = self.check_options(norm, bound, dim)
        counts_selection = self.sample_counts(xs, n0, batch_size, generator)
        cA = counts_selection.argmax(1)
        counts_estimation = self.sample_counts(xs, n, batch_size, generator)
        nA = counts_estimation.gather(1, cA[:, None]).squeeze(1)
        nB = counts_estimation.scatter(1, cA[:, None], -1).max(1).values  # runner-up: any class but cA
        cA_np, nA_np, nB_np = torch.stack([cA, nA, nB]).cpu().numpy()  # the one host sync
        pred, radius = certificate(self.noise, cA_np, nA_np, nB_np, n, alpha, norm=norm, bound=bound, dim=dim)
        return torch.from_numpy(pred), torch.from_numpy(radius)

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
        *,
        norm: str | None = None,
        bound: str = "one-sided",
    ) -> tuple[int, float]:
        """CERTIFY one input ``x`` (C, H, W): (cA, radius) or (ABSTAIN, 0.0). With probability
        >= 1 - alpha, g is constant on the ``norm`` ball of that radius around x (see
        ``certify_batch`` for ``norm`` and ``bound``)."""
        pred, radius = self.certify_batch(self._as_batch(x, "x", single=True), n0, n, alpha, batch_size, generator,
                                          norm=norm, bound=bound)
        return int(pred[0]), float(radius[0])

    # -- PREDICT -------------------------------------------------------------------------
    def predict_batch(
        self,
        xs: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """PREDICT (Cohen et al., 2019) for each input of ``xs``: draw n noisy samples, take the
        top two counts nA >= nB (classes cA, cB); return cA if the two-sided binomial test of
        nA ~ Bin(nA + nB, 1/2) has p-value <= alpha, else ``ABSTAIN``. A (B,) int64 tensor."""
        n = check_int("n", n, 1)
        alpha = check_alpha(alpha)
        xs = self._as_batch(xs, "xs", single=False)
        counts = self.sample_counts(xs, n, batch_size, generator)
        top2 = counts.topk(2, dim=1)
        nA, nB, cA = torch.stack([top2.values[:, 0], top2.values[:, 1], top2.indices[:, 0]]).cpu().numpy()
        pvalue = np.array([abstain_test_pvalue(a, b) for a, b in zip(nA, nB)])
        return torch.from_numpy(np.where(pvalue <= alpha, cA, ABSTAIN).astype(np.int64))

    def predict(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> int:
        """PREDICT one input ``x`` (C, H, W): the top class, or ABSTAIN. Returns a class other than
        g(x) with probability at most alpha."""
        return int(self.predict_batch(self._as_batch(x, "x", single=True), n, alpha, batch_size, generator)[0])
