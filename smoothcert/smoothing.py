"""The smoothed classifier g(x) = argmax_c P(f(x + eps) = c), eps ~ N(0, sigma^2 I).

Implements CERTIFY and PREDICT of Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness
via Randomized Smoothing" (ICML 2019), Section 3.2 / Pseudocode:

* ``certify``: draw n0 noisy samples and take the top class cA (selection); draw n *fresh*
  samples and count nA votes for cA (estimation); pA_lower is the one-sided (1 - alpha)
  Clopper–Pearson lower bound on P(f(x + eps) = cA). If pA_lower < 1/2 abstain, else return cA
  with L2 radius R = sigma * Phi^-1(pA_lower). With probability >= 1 - alpha over the samples,
  g(x + delta) = cA for every ||delta||_2 < R.
* ``predict``: draw n samples, take the top two counts c1 >= c2 and return the top class unless
  the two-sided binomial test of c1 ~ Bin(c1 + c2, 1/2) has p-value > alpha (then abstain). The
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
from scipy.stats import norm
from torch import nn

from .noise import GaussianNoise
from .stats import abstain_test_pvalue, clopper_pearson_lower
from .inference import allocate, chunk_candidates, memory_cap, prepare_model, probe_chunk_size
from .sequential import ConfidenceSequence, StoppingRule, abstain_test_pvalues
from .validation import ArgumentError, check_alpha, check_int

ABSTAIN = -1


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


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
    noise: GaussianNoise,
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


class Smooth:
    """A smoothed classifier around ``base_classifier`` (a model mapping (B, C, H, W) in pixel
    space to (B, num_classes) logits). Compatible with Cohen et al.'s ``core.Smooth``.

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
        sigma: float,
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
            raise ValueError("base_classifier must be an nn.Module or a callable")
        num_classes = check_int("num_classes", num_classes, 1)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.noise = GaussianNoise(sigma)
        self.sigma = self.noise.sigma
        self.device = model_device(base_classifier) if isinstance(base_classifier, nn.Module) else torch.device("cpu")
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
        batch_size = check_int("batch_size", batch_size, 1)
        xs = xs.to(self.device)
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
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor")
        if single:
            if x.dim() < 1:
                raise ValueError(f"{name} must have shape (C, H, W) (one input), got {tuple(x.shape)}")
            return x.unsqueeze(0)
        if x.dim() < 2:
            raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}")
        return x

    # -- CERTIFY -------------------------------------------------------------------------
    def certify_batch(
        self,
        xs: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CERTIFY for each input of ``xs`` (B, C, H, W): returns (predictions, radii), a (B,)
        int64 tensor (``ABSTAIN`` where abstained) and a (B,) float64 tensor (0 where abstained).

        Selection (n0) and estimation (n) use independent draws; the host syncs once per call.
        """
        n0 = check_int("n0", n0, 1)
        n = check_int("n", n, 1)
        if not (0.0 < alpha < 1.0):
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        xs = self._as_batch(xs, "xs", single=False)
        counts_selection = self.sample_counts(xs, n0, batch_size, generator)
        cA = counts_selection.argmax(1)
        counts_estimation = self.sample_counts(xs, n, batch_size, generator)
        nA = counts_estimation.gather(1, cA[:, None]).squeeze(1)
        cA_np, nA_np = torch.stack([cA, nA]).cpu().numpy()  # the one host sync
        pA_lower = clopper_pearson_lower(nA_np, n, alpha)
        certified = pA_lower >= 0.5
        radius = np.where(certified, self.sigma * norm.ppf(np.where(certified, pA_lower, 0.75)), 0.0)
        pred = np.where(certified, cA_np, ABSTAIN)
        return torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(radius.astype(np.float64))

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[int, float]:
        """CERTIFY one input ``x`` (C, H, W): (cA, radius) or (ABSTAIN, 0.0). With probability
        >= 1 - alpha, g is constant on the L2 ball of that radius around x."""
        pred, radius = self.certify_batch(self._as_batch(x, "x", single=True), n0, n, alpha, batch_size, generator)
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
        """PREDICT for each input of ``xs``: a (B,) int64 tensor, ``ABSTAIN`` where the binomial
        test of the top two counts has p-value > alpha."""
        n = check_int("n", n, 1)
        if not (0.0 < alpha < 1.0):
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        xs = self._as_batch(xs, "xs", single=False)
        counts = self.sample_counts(xs, n, batch_size, generator)
        top2 = counts.topk(2, dim=1)
        values, labels = torch.cat([top2.values, top2.indices], 1).cpu().numpy().reshape(-1, 2, 2).transpose(1, 0, 2)
        out = np.empty(len(values), dtype=np.int64)
        for i, ((c1, c2), (top, _)) in enumerate(zip(values, labels)):
            out[i] = ABSTAIN if abstain_test_pvalue(c1, c2) > alpha else top
        return torch.from_numpy(out)

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
        (<= n_max). One host sync per round; only inputs still running draw samples.
        """
        n0 = check_int("n0", n0, 1)
        n_max = check_int("n_max", n_max, 1)
        alpha = check_alpha(alpha)
        batch_size = check_int("batch_size", batch_size, 1)
        rule = StoppingRule(self.noise, ConfidenceSequence.create(n_max, alpha), radii, tol)
        xs = self._as_batch(xs, "xs", single=False).to(self.device)
        B = xs.shape[0]
        cA = self.sample_counts(xs, n0, batch_size, generator).argmax(1)
        cA_np = np.zeros(B, dtype=np.int64)
        nA = np.zeros(B, dtype=np.int64)
        n_used = np.zeros(B, dtype=np.int64)
        radius = np.full(B, -np.inf)
        running = np.arange(B)
        drawn = 0
        for k, n_k in enumerate(rule.cs.looks):
            sel = torch.from_numpy(running).to(xs.device)
            counts = self.sample_counts(xs[sel], int(n_k) - drawn, batch_size, generator)
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
    ) -> tuple[int, float, int]:
        """Sequential CERTIFY of one input ``x`` (C, H, W): (cA, radius, n_used) or
        (ABSTAIN, 0.0, n_used); see ``certify_sequential_batch``."""
        pred, radius, n_used = self.certify_sequential_batch(
            self._as_batch(x, "x", single=True), n0, n_max, alpha, batch_size, radii, tol, generator
        )
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
            counts_total[sel] += self.sample_counts(xs[sel], int(n_k) - drawn, batch_size, generator)
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
