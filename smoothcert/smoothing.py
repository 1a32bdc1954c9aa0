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
* ``certify_sequential``: CERTIFY's selection, then estimation in growing rounds that stop as
  soon as the certificate can no longer improve within n_max samples; the lower bound on pA is
  an anytime-valid confidence sequence (``smoothcert.sequential``), so the guarantee is the same.
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
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .inference import allocate, chunk_candidates, memory_cap, prepare_model, probe_chunk_size
from .noise import Noise, check_bound, get_noise
from .stats import abstain_test_pvalue, clopper_pearson_lower, clopper_pearson_upper
from .sequential import ConfidenceSequence, StoppingRule, abstain_test_pvalues
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


class Workspace:
    """The sampler's reusable buffers: ``noise`` (contiguous, one noise span) and ``batch`` (the
    channels-last forward batch, used only where the input has more than one channel). Grown on
    demand, never shrunk, so repeated calls allocate nothing."""

    def __init__(self) -> None:
        self.noise: torch.Tensor | None = None
        self.batch: torch.Tensor | None = None

    @staticmethod
    def _fits(buf: torch.Tensor | None, rows: int, shape: tuple, device: torch.device, dtype: torch.dtype) -> bool:
        return (buf is not None and buf.shape[0] >= rows and tuple(buf.shape[1:]) == shape
                and buf.device == device and buf.dtype == dtype)

    def get(self, name: str, rows: int, shape: tuple, device: torch.device, dtype: torch.dtype,
            memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        buf = getattr(self, name)
        if not self._fits(buf, rows, shape, device, dtype):
            setattr(self, name, None)  # free the old one before allocating
            buf = allocate(rows, shape, device=device, dtype=dtype, memory_format=memory_format)
            setattr(self, name, buf)
        return buf[:rows]


# -- sampler soundness checks (issue 12): the one place they live --------------------------------

def _check_logits(logits: torch.Tensor, rows: int, num_classes: int) -> None:
    """Logits of a forward batch of ``rows`` samples must be (rows, num_classes)."""
    if logits.dim() != 2 or logits.shape[0] != rows:
        raise ValueError(f"the model must return (batch, num_classes) logits: got shape {tuple(logits.shape)} "
                         f"for a batch of {rows}")
    if logits.shape[1] != num_classes:
        raise ArgumentError("num_classes", f"num_classes={num_classes} but the model returned "
                                           f"{logits.shape[1]} logits per sample")


def _check_counts(counts: torch.Tensor, nonfinite: torch.Tensor, num: int) -> None:
    """One host sync per call: no non-finite logits were seen, and each input's counts sum to num."""
    bad_logits, bad_sums = torch.stack([nonfinite, (counts.sum(1) != num).sum()]).tolist()
    if bad_logits:
        raise ValueError(f"the model returned non-finite logits (NaN or inf) for {bad_logits} noisy samples: "
                         "they cannot vote for a class")
    assert not bad_sums, f"sampler bug: the counts of {bad_sums} inputs do not sum to num={num}"


# -- the sampler ----------------------------------------------------------------------------------

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
    buffer: Workspace | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Vote counts of f over ``num`` noisy copies of each input: a (B, num_classes) int64 tensor
    on the inputs' device.

    ``xs`` is (B, *shape) on the model's device. Samples are laid out input-major (input i owns
    flat indices [i * num, (i + 1) * num)). Noise is drawn in blocks of ``batch_size`` rows of
    that layout (one ``noise.sample_`` call per block, into a contiguous buffer, in the logical
    (N, C, H, W) order), so the samples -- and the counts, for a seeded generator -- depend on
    the seed, ``batch_size`` and ``num`` only. The model runs in forward chunks of ``chunk_size``
    rows (default ``batch_size``; a chunk holds part of one block or several whole blocks), which
    therefore changes the speed, never the result. A chunk may hold the samples of several
    inputs. With ``channels_last`` (and more than one channel) the noisy batch is written in the
    channels-last format by the same pass that adds the input. ``buffer`` (a ``Workspace``) is
    reused across calls.

    Against the first release, for the same seed and ``batch_size``: identical noise where it
    drew into a contiguous buffer (``channels_last=False``, or one input channel); different
    noise for multi-channel inputs with ``channels_last`` (its default), where ``normal_`` on the
    channels-last buffer took PyTorch's strided path, which yields other values (and ran 8x
    slower). Counts can also move by a vote where BatchNorm folding changes float rounding.
    """
    num = check_int("num", num, 1)
    block = check_int("batch_size", batch_size, 1)
    chunk = block if chunk_size is None else check_int("chunk_size", chunk_size, 1)
    num_classes = check_int("num_classes", num_classes, 2)
    if xs.dim() < 2:
        raise ValueError(f"xs must be a batch (B, C, ...), got shape {tuple(xs.shape)}")
    B, shape = xs.shape[0], tuple(xs.shape[1:])
    device, total = xs.device, B * num
    if chunk >= block:
        chunk -= chunk % block  # whole blocks per chunk
        span = chunk  # rows of noise drawn before they are used: chunk // block blocks
    else:
        span = block  # one block, run in several chunks
    span = min(span, total)
    chunk = min(chunk, span)
    buffer = Workspace() if buffer is None else buffer
    noise_buf = buffer.get("noise", span, shape, device, xs.dtype)
    transpose = channels_last and len(shape) == 3 and shape[0] > 1
    batch_buf = (buffer.get("batch", chunk, shape, device, xs.dtype, torch.channels_last) if transpose else None)
    counts = torch.zeros(B * num_classes, dtype=torch.long, device=device)
    nonfinite = torch.zeros((), dtype=torch.long, device=device)
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    )
    with torch.inference_mode(), autocast:
        for s0 in range(0, total, span):
            s1 = min(s0 + span, total)
            for b0 in range(s0, s1, block):  # the noise: one draw per block, chunk-independent
                noise.sample_(noise_buf[b0 - s0 : min(b0 + block, s1) - s0], generator)
            for start in range(s0, s1, chunk):
                stop = min(start + chunk, s1)
                eps = noise_buf[start - s0 : stop - s0]
                batch = batch_buf[: stop - start] if transpose else eps  # eps is used once: add in place
                first, last = start // num, (stop - 1) // num
                for i in range(first, last + 1):
                    a, b = max(start, i * num) - start, min(stop, (i + 1) * num) - start
                    torch.add(eps[a:b], xs[i], out=batch[a:b])
                logits = model(batch)
                _check_logits(logits, stop - start, num_classes)
                nonfinite += (~torch.isfinite(logits)).any(1).sum()
                preds = logits.argmax(1)
                if first == last:  # one input in this chunk: count directly
                    counts[first * num_classes : (first + 1) * num_classes] += torch.bincount(
                        preds, minlength=num_classes)
                else:
                    owner = torch.arange(start, stop, device=device).div_(num, rounding_mode="floor") - first
                    seg = counts[first * num_classes : (last + 1) * num_classes]
                    seg += torch.bincount(owner * num_classes + preds, minlength=(last - first + 1) * num_classes)
    counts = counts.view(B, num_classes)
    _check_counts(counts, nonfinite, num)
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

    Options beyond the original (all keyword-only). ``Smooth`` runs an inference copy of
    ``base_classifier`` (``inference.prepare_model``) and never changes the caller's model
    (weights, memory format and training flag stay as they were); changes made to that model
    after construction are not seen, so build a new ``Smooth`` (cheap) to certify new weights.
    Effects below: certify samples/s with batch_size 1000, option on vs off, LeNet / ResNet-20,
    one thread on the shared 2-core CPU (experiments/bench_certify.py, experiments/README.md):

    * ``channels_last`` (default on): the copy and the noisy batches use the channels-last
      memory format; only float rounding changes. 2.6x / 1.16x.
    * ``fold_bn`` (default: on when ``base_classifier`` is in eval mode): BatchNorm folded into
      the preceding conv/linear layer of the copy (same function up to float rounding).
      ResNet-20 1.29x (LeNet has no BatchNorm).
    * ``compile``: the copy wrapped in ``torch.compile``: 1.07x / 1.08x (inside the spread of
      the repetitions), after a first call that compiles (60-110 s here, 8-14 s when cached).
    * ``amp_dtype`` (e.g. ``torch.bfloat16``): forward passes under autocast. The certificate is
      then a certificate for the bfloat16 model: deploy it at the same precision. 1.4x / 2.75x
      on this CPU (AVX-512 BF16 and AMX); CPUs without bfloat16 units may be slower.
    * ``chunk_size``: forward batch size; default None: the fastest of a few sizes up to each
      call's ``batch_size``, found by a short timed probe the first time it matters and cached
      (it runs the copy a few times on a constant input and draws no random numbers).
      Results never depend on it (noise is drawn in blocks of ``batch_size`` rows, see
      ``sample_counts``), so ``batch_size`` is what it is for a user: the memory bound and the
      unit of the seeded noise stream.
    * ``max_batch``: an upper bound on the forward chunk that replaces ``batch_size`` as the
      memory bound (``"auto"``: derived from free memory, as ``--batch auto`` on the CLI); the
      noise is still drawn in blocks of ``min(batch_size, max_batch)`` rows.
    * ``seed``: a default generator so that reruns are identical (a ``generator`` passed to a
      call takes precedence).
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
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size, 1)
        if max_batch is not None and max_batch != "auto":
            max_batch = check_int("max_batch", max_batch, 1)
        self.max_batch = max_batch
        self._forward, self.inference_info = prepare_model(
            base_classifier, fold_bn=fold_bn, channels_last=self.channels_last, compile=compile)
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self._buffer = Workspace()
        self._chunks: dict[tuple, int] = {}  # (block, cap, shape, dtype) -> probed chunk size

    @property
    def model(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The inference copy the sampler runs (see ``inference.prepare_model``)."""
        return self._forward

    # -- the sampler ---------------------------------------------------------------------
    def _chunk(self, xs: torch.Tensor, num: int, block: int) -> tuple[int, int]:
        """(noise block, forward chunk) for a call: the chunk is probed once per (block, cap,
        shape, dtype) and cached."""
        shape = tuple(xs.shape[1:])
        cap = block
        if self.max_batch == "auto":
            key = ("cap", shape, xs.dtype)
            if key not in self._chunks:
                plain = getattr(self._forward, "_orig_mod", self._forward)
                self._chunks[key] = memory_cap(plain, shape, self.device, xs.dtype)
            cap = self._chunks[key]
        elif self.max_batch is not None:
            cap = self.max_batch
        block = min(block, cap)
        if self.chunk_size is not None:
            return block, min(self.chunk_size, cap)
        candidates = chunk_candidates(block, cap)
        if len(candidates) == 1 or xs.shape[0] * num <= candidates[0]:
            return block, block  # one chunk whatever the choice: nothing to probe
        key = (block, cap, shape, xs.dtype)
        if key not in self._chunks:
            fmt = torch.channels_last if self.channels_last and len(shape) == 3 else torch.contiguous_format
            self._chunks[key] = probe_chunk_size(self._forward, shape, candidates, device=self.device,
                                                 dtype=xs.dtype, memory_format=fmt, amp_dtype=self.amp_dtype)
        return block, self._chunks[key]

    def sample_counts(
        self, xs: torch.Tensor, num: int, batch_size: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, num_classes) vote counts on the device for a batch ``xs`` (see ``sample_counts``)."""
        return self._counts(self._as_batch(xs, "xs", single=False), num, batch_size, generator)

    def _counts(
        self, xs: torch.Tensor, num: int, batch_size: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``sample_counts`` for a batch already checked by ``_as_batch`` (no second host sync)."""
        batch_size = check_int("batch_size", batch_size, 1)
        try:
            block, chunk = self._chunk(xs, num, batch_size)
            return sample_counts(
                self._forward,
                xs,
                num,
                self.noise,
                self.num_classes,
                block,
                generator if generator is not None else self.generator,
                amp_dtype=self.amp_dtype,
                channels_last=self.channels_last,
                buffer=self._buffer,
                chunk_size=chunk,
            )
        except torch.OutOfMemoryError as exc:
            raise ArgumentError("batch_size", f"batch_size={batch_size}: the forward pass ran out of memory on "
                                              f"{self.device}: use a smaller batch_size (CLI: --batch, or --batch auto)"
                                ) from exc

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
            index = int(bad.nonzero()[0, 0])
            where = "" if single else f"[{index}]"
            error = ArgumentError(name, f"{name}{where} has non-finite values (NaN or inf) in {self.dtype}")
            error.index = None if single else index  # the dataset runner maps it to the dataset's idx
            raise error
        return x

    def check_options(self, norm: str | None = None, bound: str = "one-sided", dim: int | None = None,
                      sequential: bool = False) -> tuple[str, str]:
        """(norm, bound) validated for this noise: None is the noise's natural norm.
        ArgumentError("norm") for a norm the noise cannot certify, ArgumentError("bound") for an
        unknown bound, a two-sided bound the noise has no certificate for, or a two-sided bound
        with ``sequential`` (the confidence sequence bounds pA alone)."""
        norm = self.noise.check_norm(norm)
        bound = check_bound(bound)
        if sequential and bound != "one-sided":
            raise ArgumentError("bound", f"bound: sequential certification bounds pA alone (one-sided), got {bound!r}")
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
        counts_selection = self._counts(xs, n0, batch_size, generator)
        cA = counts_selection.argmax(1)
        counts_estimation = self._counts(xs, n, batch_size, generator)
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
        counts = self._counts(xs, n, batch_size, generator)
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

    # -- sequential CERTIFY --------------------------------------------------------------
    def certify_sequential_batch(
        self,
        xs: torch.Tensor,
        n0: int,
        n_max: int,
        alpha: float,
        batch_size: int,
        radii: Sequence[float] | np.ndarray | None = None,
        tol: float | None = None,
        generator: torch.Generator | None = None,
        *,
        norm: str | None = None,
        bound: str = "one-sided",
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CERTIFY with a sequential stopping rule (``smoothcert.sequential``) for each input of
        ``xs``: returns (predictions, radii, n_used), (B,) int64 / float64 / int64 tensors.

        Selection is CERTIFY's (n0 samples pick cA). Estimation draws fresh samples in rounds up
        to the looks of an anytime-valid Clopper–Pearson confidence sequence (union bound over
        the looks) and stops each input once its certificate cannot improve within ``n_max``
        samples: with a sorted grid ``radii`` the radius is the largest grid radius certified (a
        lower bound on the radius the same samples certify), without it the radius itself
        (to within ``tol``, default 0.01 sigma). With probability >= 1 - alpha every returned
        radius is certified, whatever the stopping time. ``n_used`` counts estimation samples
        (<= n_max). One host sync per round; only inputs still running draw samples. ``norm``
        as in ``certify`` (the noise's radius for that norm); the bound is one-sided (the
        confidence sequence bounds pA alone), ``bound="two-sided"`` is refused.
        """
        n0 = check_int("n0", n0, 1)
        n_max = check_int("n_max", n_max, 1)
        alpha = check_alpha(alpha)
        batch_size = check_int("batch_size", batch_size, 1)
        xs = self._as_batch(xs, "xs", single=False).to(self.device)
        dim = int(xs[0].numel())
        norm, bound = self.check_options(norm, bound, dim, sequential=True)
        rule = StoppingRule(self.noise, ConfidenceSequence.create(n_max, alpha), radii, tol, norm, dim)
        B = xs.shape[0]
        cA = self._counts(xs, n0, batch_size, generator).argmax(1)
        cA_np = np.zeros(B, dtype=np.int64)
        nA = np.zeros(B, dtype=np.int64)
        n_used = np.zeros(B, dtype=np.int64)
        radius = np.full(B, -np.inf)
        running = np.arange(B)
        drawn = 0
        for k, n_k in enumerate(rule.cs.looks):
            sel = torch.from_numpy(running).to(xs.device)
            counts = self._counts(xs[sel], int(n_k) - drawn, batch_size, generator)
            new = counts.gather(1, cA[sel, None]).squeeze(1)
            top, new_np = torch.stack([cA[sel], new]).cpu().numpy()  # the one host sync of the round
            drawn = int(n_k)
            cA_np[running] = top
            nA[running] += new_np
            n_used[running] = drawn
            stop, radius[running] = rule.step(nA[running], k)
            running = running[~stop]
            if running.size == 0:
                break
        certified = radius > -np.inf
        pred = np.where(certified, cA_np, ABSTAIN)
        radius = np.where(certified, np.maximum(radius, 0.0), 0.0)
        return torch.from_numpy(pred), torch.from_numpy(radius.astype(np.float64)), torch.from_numpy(n_used)

    def certify_sequential(
        self,
        x: torch.Tensor,
        n0: int,
        n_max: int,
        alpha: float,
        batch_size: int,
        radii: Sequence[float] | np.ndarray | None = None,
        tol: float | None = None,
        generator: torch.Generator | None = None,
        *,
        norm: str | None = None,
        bound: str = "one-sided",
    ) -> tuple[int, float, int]:
        """Sequential CERTIFY of one input ``x`` (C, H, W): (cA, radius, n_used) or
        (ABSTAIN, 0.0, n_used); see ``certify_sequential_batch``."""
        pred, radius, n_used = self.certify_sequential_batch(
            self._as_batch(x, "x", single=True), n0, n_max, alpha, batch_size, radii, tol, generator,
            norm=norm, bound=bound)
        return int(pred[0]), float(radius[0]), int(n_used[0])

    # -- sequential PREDICT --------------------------------------------------------------
    def predict_sequential_batch(
        self,
        xs: torch.Tensor,
        n_max: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """PREDICT with early stopping for each input of ``xs``: (predictions, n_used), (B,)
        int64 tensors (``ABSTAIN`` where undecided at n_max).

        Samples are drawn in rounds up to the looks of ``ConfidenceSequence.create(n_max, alpha)``;
        at look k the top two counts c1 >= c2 are tested as in PREDICT (two-sided binomial test
        of c1 ~ Bin(c1 + c2, 1/2)) at level alpha_k, and the top class is returned once the test
        rejects. Returning a class other than g(x) at look k needs a false rejection at level
        alpha_k (Cohen et al., 2019, Theorem 2, for the fixed sample size n_k), so by the union
        bound over the looks it happens with probability at most sum_k alpha_k = alpha, whatever
        the stopping time.
        """
        n_max = check_int("n_max", n_max, 1)
        alpha = check_alpha(alpha)
        batch_size = check_int("batch_size", batch_size, 1)
        cs = ConfidenceSequence.create(n_max, alpha)
        xs = self._as_batch(xs, "xs", single=False).to(self.device)
        B = xs.shape[0]
        counts_total = torch.zeros(B, self.num_classes, dtype=torch.long, device=xs.device)
        pred = np.full(B, ABSTAIN, dtype=np.int64)
        n_used = np.zeros(B, dtype=np.int64)
        running = np.arange(B)
        drawn = 0
        for k, n_k in enumerate(cs.looks):
            sel = torch.from_numpy(running).to(xs.device)
            counts_total[sel] += self._counts(xs[sel], int(n_k) - drawn, batch_size, generator)
            top2 = counts_total[sel].topk(2, dim=1)
            values, labels = torch.stack([top2.values, top2.indices]).cpu().numpy()  # one host sync
            drawn = int(n_k)
            n_used[running] = drawn
            decided = abstain_test_pvalues(values[:, 0], values[:, 1]) <= cs.alphas[k]
            pred[running[decided]] = labels[decided, 0]
            running = running[~decided]
            if running.size == 0:
                break
        return torch.from_numpy(pred), torch.from_numpy(n_used)

    def predict_sequential(
        self,
        x: torch.Tensor,
        n_max: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[int, int]:
        """Sequential PREDICT of one input ``x`` (C, H, W): (class or ABSTAIN, n_used); see
        ``predict_sequential_batch``."""
        pred, n_used = self.predict_sequential_batch(self._as_batch(x, "x", single=True), n_max, alpha, batch_size,
                                                     generator)
        return int(pred[0]), int(n_used[0])
