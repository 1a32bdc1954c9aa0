"""The sampler: the one place where noise is drawn, the model runs and votes are counted.

``draw_counts`` is the sampling loop: noise drawn on the model's device into a reused buffer
(``Workspace``) in blocks of ``batch_size`` rows, the model run under ``torch.inference_mode`` in
forward chunks that may pack the samples of several inputs, votes counted on the device with
``torch.bincount``; the host sees the counts once per call.

``Sampler`` holds what a smoothed classifier samples with: the inference copy of the model
(``inference.prepare_model``: eval mode, BatchNorm folded, channels-last, optionally compiled),
its device and dtype, the noise, the default generator, the buffers, the forward chunk (probed
once, ``inference.probe_chunk_size``) and the memory cap (``inference.memory_cap``). Its
``batch`` checks inputs and ``counts`` is the one counting call that CERTIFY, PREDICT
(``smoothcert.procedures``), their sequential forms and the training methods that need vote
counts go through.

Sequential certification packed across inputs (``procedures.certify_sequential_packed``) fills
each forward batch with the rows of several inputs at their own looks: ``NoiseStream`` draws one
input's noise from its own generator in the blocks ``draw_counts`` would draw for it alone, and
``draw_counts_rows`` runs one forward batch over such rows; ``draw_counts`` is unchanged.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch
from torch import nn

from .inference import allocate, chunk_candidates, memory_cap, prepare_model, probe_chunk_size
from .noise import Noise, get_noise
from .validation import ArgumentError, check_int


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

def draw_counts(
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
    reused across calls. (How the draws compare with earlier releases: CHANGELOG.md.)
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


class NoiseStream:
    """One input's noise drawn from its own ``generator``, in the layout ``draw_counts`` gives a
    single input: each call's worth of ``num`` rows (a *round*, ``start``) is drawn in blocks of
    ``block`` rows (one ``noise.sample_`` call per block, the last one of a round shorter), so
    the rows an input sees are those of ``draw_counts(model, x[None], num, ..., block,
    generator)`` called once per round, however ``take`` cuts them across forward batches (the
    rest of a block cut by a batch is kept for the next ``take``)."""

    def __init__(self, noise: Noise, shape: tuple, device: torch.device, dtype: torch.dtype, block: int,
                 generator: torch.Generator | None) -> None:
        self.noise, self.shape, self.device, self.dtype = noise, tuple(shape), device, dtype
        self.block = check_int("block", block, 1)
        self.generator = generator
        self.undrawn = 0  # rows of the round not drawn yet
        self.left = 0  # rows of the round not taken yet
        self._rest: torch.Tensor | None = None  # drawn, not taken (the end of a cut block)

    def start(self, num: int) -> None:
        """Begin a round of ``num`` rows (the previous one must be taken in full)."""
        assert self.left == 0 and self._rest is None, "NoiseStream: a round was left unfinished"
        self.undrawn = self.left = check_int("num", num, 1)

    def take(self, out: torch.Tensor) -> None:
        """Fill ``out`` (k rows, k <= the rows left in the round) with the next k rows."""
        k = out.shape[0]
        assert 0 < k <= self.left, f"NoiseStream: {k} rows asked, {self.left} left in the round"
        pos = 0
        if self._rest is not None:
            m = min(k, self._rest.shape[0])
            out[:m].copy_(self._rest[:m])
            self._rest = self._rest[m:] if m < self._rest.shape[0] else None
            pos = m
        while pos < k:
            size = min(self.block, self.undrawn)
            self.undrawn -= size
            if k - pos >= size:  # the whole block goes into this batch: draw it in place
                self.noise.sample_(out[pos:pos + size], self.generator)
                pos += size
            else:  # cut by the batch: draw it whole, keep its end
                buf = self.noise.sample_(torch.empty((size, *self.shape), device=self.device, dtype=self.dtype),
                                         self.generator)
                out[pos:k].copy_(buf[: k - pos])
                self._rest = buf[k - pos:]
                pos = k
        self.left -= k


def draw_counts_rows(
    model: Callable[[torch.Tensor], torch.Tensor],
    xs: torch.Tensor,
    rows: list[int],
    streams: list["NoiseStream"],
    num_classes: int,
    *,
    chunk_size: int | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    buffer: Workspace | None = None,
) -> torch.Tensor:
    """Vote counts of f over ``rows[i]`` noisy copies of input ``xs[i]`` whose noise comes from
    ``streams[i]`` (each input's own generator, ``NoiseStream``): a (B, num_classes) int64 tensor
    on the host. The sum(rows) samples make one forward batch (run in chunks of ``chunk_size``
    rows, default all: speed only), laid out input-major as in ``draw_counts``, and the counts come
back on the host (the batch's one host sync). What each input
    draws depends on its stream alone, not on the other inputs of the batch. This is the
    sampler of sequential certification packed across inputs
    (``procedures.certify_sequential_packed``); ``draw_counts`` stays the one loop of every
    other call (its seeded noise stream is unchanged)."""
    if xs.dim() < 2 or xs.shape[0] != len(rows) or len(rows) != len(streams):
        raise ValueError(f"xs, rows and streams must describe the same inputs: {tuple(xs.shape)}, {len(rows)}, "
                         f"{len(streams)}")
    num_classes = check_int("num_classes", num_classes, 2)
    rows = [check_int("rows", r, 1) for r in rows]
    B, shape, device = xs.shape[0], tuple(xs.shape[1:]), xs.device
    total = sum(rows)
    chunk = total if chunk_size is None else min(check_int("chunk_size", chunk_size, 1), total)
    buffer = Workspace() if buffer is None else buffer
    noise_buf = buffer.get("noise", total, shape, device, xs.dtype)
    transpose = channels_last and len(shape) == 3 and shape[0] > 1
    batch_buf = buffer.get("batch", chunk, shape, device, xs.dtype, torch.channels_last) if transpose else None
    starts = [0]
    for r in rows:
        starts.append(starts[-1] + r)
    owner = torch.repeat_interleave(torch.arange(B, device=device), torch.tensor(rows, device=device))
    counts = torch.zeros(B * num_classes, dtype=torch.long, device=device)
    nonfinite = torch.zeros((), dtype=torch.long, device=device)
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    )
    with torch.inference_mode(), autocast:
        for i, stream in enumerate(streams):  # the noise: from each input's own stream
            stream.take(noise_buf[starts[i]:starts[i + 1]])
        for start in range(0, total, chunk):
            stop = min(start + chunk, total)
            eps = noise_buf[start:stop]
            batch = batch_buf[: stop - start] if transpose else eps
            for i in range(B):
                a, b = max(start, starts[i]), min(stop, starts[i + 1])
                if a < b:
                    torch.add(eps[a - start:b - start], xs[i], out=batch[a - start:b - start])
            logits = model(batch)
            _check_logits(logits, stop - start, num_classes)
            nonfinite += (~torch.isfinite(logits)).any(1).sum()
            counts += torch.bincount(owner[start:stop] * num_classes + logits.argmax(1), minlength=B * num_classes)
    host = torch.cat([nonfinite.view(1), counts]).cpu()  # the one host sync of the batch
    if int(host[0]):
        raise ValueError(f"the model returned non-finite logits (NaN or inf) for {int(host[0])} noisy samples: "
                         "they cannot vote for a class")
    counts = host[1:].view(B, num_classes)
    assert counts.sum(1).tolist() == rows, "sampler bug: counts do not sum to the rows drawn"
    return counts


class Sampler:
    """Vote counts of ``base_classifier`` (a model mapping (B, C, H, W) in pixel space to
    (B, num_classes) logits) under ``noise`` (a name from ``noise.NOISES`` at ``sigma``, or a
    ``noise.Noise``).

    The sampler runs an inference copy of ``base_classifier`` (``inference.prepare_model``) and
    never changes the caller's model (weights, memory format and training flag stay as they
    were); changes made to that model after construction are not seen, so build a new sampler
    (cheap) to sample new weights. Options (keyword-only; ``Smooth`` passes its own through;
    their measured effect on speed: experiments/README.md, "Certification throughput"):

    * ``channels_last`` (default on): the copy and the noisy batches use the channels-last
      memory format; only float rounding changes.
    * ``fold_bn`` (default: on when ``base_classifier`` is in eval mode): BatchNorm folded into
      the preceding conv/linear layer of the copy (same function up to float rounding).
    * ``compile``: the copy wrapped in ``torch.compile`` (the first call compiles).
    * ``amp_dtype`` (e.g. ``torch.bfloat16``): forward passes under autocast. The certificate is
      then a certificate for the bfloat16 model: deploy it at the same precision. CPUs without
      bfloat16 units may be slower than float32.
    * ``chunk_size``: forward batch size; default None: the fastest of a few sizes up to each
      call's ``batch_size``, found by a short timed probe the first time it matters and cached
      in ``chunks`` (it runs the copy a few times on a constant input and draws no random
      numbers). Results never depend on it (noise is drawn in blocks of ``batch_size`` rows,
      see ``draw_counts``), so ``batch_size`` is what it is for a user: the memory bound and the
      unit of the seeded noise stream.
    * ``max_batch``: an upper bound on the forward chunk that replaces ``batch_size`` as the
      memory bound (``"auto"``: derived from free memory, as ``--max-batch auto`` on the CLI); the
      noise is still drawn in blocks of ``min(batch_size, max_batch)`` rows.
    * ``seed``: a default generator so that reruns are identical (a ``generator`` passed to a
      call takes precedence).
    """

    def __init__(
        self,
        base_classifier: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        num_classes: int,
        noise: str | Noise = "gaussian",
        sigma: float | None = None,
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
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.noise = get_noise(noise, sigma)
        self.device = model_device(base_classifier) if isinstance(base_classifier, nn.Module) else torch.device("cpu")
        self.dtype = model_dtype(base_classifier)
        self.amp_dtype = amp_dtype
        self.channels_last = True if channels_last is None else bool(channels_last)
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size, 1)
        if max_batch is not None and max_batch != "auto":
            max_batch = check_int("max_batch", max_batch, 1)
        self.max_batch = max_batch
        self.model, self.inference_info = prepare_model(
            base_classifier, fold_bn=fold_bn, channels_last=self.channels_last, compile=compile)
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self.workspace = Workspace()
        self.chunks: dict[tuple, int] = {}  # (block, cap, shape, dtype) -> probed chunk size; ("cap", ...) -> cap

    def batch(self, x: torch.Tensor, name: str = "xs", single: bool = False) -> torch.Tensor:
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

    def counts(
        self, xs: torch.Tensor, num: int, batch_size: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, num_classes) int64 vote counts on the device over ``num`` noisy copies of each input
        of ``xs``, a batch from ``batch`` (checked once, so that repeated calls add no host sync):
        ``draw_counts`` with this sampler's model, noise, buffers, chunk and generator (``generator``
        if given). Noise blocks of ``batch_size`` rows (or ``max_batch``, if smaller); running out
        of memory is an ArgumentError("batch_size")."""
        batch_size = check_int("batch_size", batch_size, 1)
        try:
            block, chunk = self._chunk(xs, num, batch_size)
            return draw_counts(
                self.model,
                xs,
                num,
                self.noise,
                self.num_classes,
                block,
                generator if generator is not None else self.generator,
                amp_dtype=self.amp_dtype,
                channels_last=self.channels_last,
                buffer=self.workspace,
                chunk_size=chunk,
            )
        except torch.OutOfMemoryError as exc:
            raise ArgumentError("batch_size", f"batch_size={batch_size}: the forward pass ran out of memory on "
                                              f"{self.device}: use a smaller batch_size (CLI: --batch, or --max-batch auto)"
                                ) from exc

    def stream(self, x: torch.Tensor, batch_size: int, generator: torch.Generator | None = None) -> NoiseStream:
        """A ``NoiseStream`` for the input ``x`` (C, H, W) of a ``batch`` (on the model's device):
        noise blocks of ``batch_size`` rows (or ``max_batch``, if smaller) as ``counts`` draws
        them, from ``generator`` (default: this sampler's)."""
        block, _ = self._chunk(x[None], 1, check_int("batch_size", batch_size, 1))
        return NoiseStream(self.noise, tuple(x.shape), x.device, x.dtype, block,
                           generator if generator is not None else self.generator)

    def counts_rows(self, xs: torch.Tensor, rows: list[int], streams: list[NoiseStream],
                    batch_size: int) -> torch.Tensor:
        """``draw_counts_rows`` with this sampler's model, buffers and forward chunk (probed as for
        ``counts`` with the noise block ``batch_size``): (B, num_classes) counts on the host over
        ``rows[i]`` samples of ``xs[i]`` from ``streams[i]``, sum(rows) <= batch_size rows in all."""
        try:
            _, chunk = self._chunk(xs, max(sum(rows) // max(xs.shape[0], 1), 1), check_int("batch_size", batch_size, 1))
            return draw_counts_rows(self.model, xs, rows, streams, self.num_classes, chunk_size=chunk,
                                    amp_dtype=self.amp_dtype, channels_last=self.channels_last,
                                    buffer=self.workspace)
        except torch.OutOfMemoryError as exc:
            raise ArgumentError("batch_size", f"batch_size={batch_size}: the forward pass ran out of memory on "
                                              f"{self.device}: use a smaller batch_size (CLI: --batch, or --max-batch auto)"
                                ) from exc

    def _chunk(self, xs: torch.Tensor, num: int, block: int) -> tuple[int, int]:
        """(noise block, forward chunk) for a call: the chunk is probed once per (block, cap,
        shape, dtype) and cached."""
        shape = tuple(xs.shape[1:])
        cap = block
        if self.max_batch == "auto":
            key = ("cap", shape, xs.dtype)
            if key not in self.chunks:
                plain = getattr(self.model, "_orig_mod", self.model)
                self.chunks[key] = memory_cap(plain, shape, self.device, xs.dtype)
            cap = self.chunks[key]
        elif self.max_batch is not None:
            cap = self.max_batch
        block = min(block, cap)
        if self.chunk_size is not None:
            return block, min(self.chunk_size, cap)
        candidates = chunk_candidates(block, cap)
        if len(candidates) == 1 or xs.shape[0] * num <= candidates[0]:
            return block, block  # one chunk whatever the choice: nothing to probe
        key = (block, cap, shape, xs.dtype)
        if key not in self.chunks:
            fmt = torch.channels_last if self.channels_last and len(shape) == 3 else torch.contiguous_format
            self.chunks[key] = probe_chunk_size(self.model, shape, candidates, device=self.device,
                                                dtype=xs.dtype, memory_format=fmt, amp_dtype=self.amp_dtype)
        return block, self.chunks[key]


__all__ = ["NoiseStream", "Sampler", "Workspace", "draw_counts", "draw_counts_rows", "model_device", "model_dtype"]
