"""Model preparation for Monte Carlo inference: the copy ``Smooth`` runs, and the forward chunk.

``Smooth`` never runs (or changes) the caller's model: ``prepare_model`` makes an inference copy
(``copy.deepcopy``) in eval mode, optionally with BatchNorm folded into the preceding
convolution / linear layer, in the channels-last memory format, and wrapped in ``torch.compile``.
``probe_chunk_size`` times a few forward batch sizes once and returns the fastest; ``memory_cap``
derives the largest batch that fits in free memory (``--max-batch auto``).

Folding BatchNorm (``fold_batchnorm``): in eval mode BN is the affine map
y = gamma * (z - mu) / sqrt(var + eps) + beta of the previous layer's output z = W x + b, so it
is absorbed exactly into W' = W * s, b' = (b - mu) * s + beta with s = gamma / sqrt(var + eps)
(per output channel). The folded model computes the same function up to float rounding.
"""
from __future__ import annotations

import copy
import math
import os
import time
import warnings
from contextlib import nullcontext
from typing import Callable, Sequence

import torch
from torch import nn

from .validation import ArgumentError

_FOLDABLE = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d),
             (nn.Linear, nn.BatchNorm1d))


def _bn_foldable(bn: nn.Module) -> bool:
    """Exactly BatchNorm (not a subclass with other semantics) using running statistics."""
    return (type(bn) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d) and bn.track_running_stats
            and bn.running_mean is not None and bn.running_var is not None)


def _folded(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of ``layer`` (conv or linear) with the eval-mode ``bn`` after it absorbed."""
    out = copy.deepcopy(layer)
    with torch.no_grad():
        scale = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        s = scale / torch.sqrt(bn.running_var + bn.eps)
        w = out.weight
        out.weight.copy_(w * s.reshape(-1, *([1] * (w.dim() - 1))).to(w.dtype))
        b = out.bias if out.bias is not None else torch.zeros_like(bn.running_mean)
        new_b = ((b - bn.running_mean) * s + shift).to(w.dtype)
        if out.bias is None:
            out.bias = nn.Parameter(new_b)
        else:
            out.bias.copy_(new_b)
    return out


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """Fold every eval-mode BatchNorm whose only input is a conv/linear layer used nowhere else
    into that layer. Returns (module, number folded); ``model`` itself is not modified (the result
    is a ``torch.fx.GraphModule`` when something was folded). A model that ``torch.fx`` cannot
    trace is returned unchanged with 0."""
    import torch.fx as fx

    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # dynamic control flow etc.: run the model as it is
        warnings.warn(f"BatchNorm folding skipped: torch.fx cannot trace the model ({type(exc).__name__})",
                      stacklevel=3)
        return model, 0
    modules = dict(gm.named_modules())
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        prev = node.args[0]
        if prev.op != "call_module" or len(prev.users) != 1 or len(node.args) != 1 or node.kwargs:
            continue
        layer, bn = modules[prev.target], modules[node.target]
        if not any(type(layer) is lt and type(bn) is bt for lt, bt in _FOLDABLE) or not _bn_foldable(bn):
            continue
        if layer.weight.shape[0] != bn.num_features:
            continue
        new = _folded(layer, bn)
        parent, _, name = prev.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, name, new)
        modules[prev.target] = new
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded += 1
    if not folded:
        return model, 0
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm, folded


def prepare_model(
    model: nn.Module,
    *,
    fold_bn: bool | None = None,
    channels_last: bool = True,
    compile: bool = False,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    """The inference copy of ``model``: (forward callable, info). The caller's model is left
    exactly as it was (weights, memory format, training flag).

    The copy is in eval mode; ``fold_bn`` (default: on when ``model`` is in eval mode) folds
    BatchNorm into the preceding conv/linear layer; ``channels_last`` converts 4-d weights to the
    channels-last memory format; ``compile`` wraps the copy in ``torch.compile``. ``info``
    records what was done: ``{"copied", "folded_bn", "channels_last", "compiled"}``.
    """
    info = {"copied": False, "folded_bn": 0, "channels_last": False, "compiled": False}
    if not isinstance(model, nn.Module):
        return model, info
    if fold_bn is None:
        fold_bn = not model.training
    try:
        net = copy.deepcopy(model)
        info["copied"] = True
    except Exception as exc:  # an uncopyable module: run it as it is, in eval mode per call
        warnings.warn(f"Smooth runs the caller's model (it cannot be copied: {type(exc).__name__}); "
                      "no BatchNorm folding or channels-last conversion", stacklevel=3)
        return _EvalCall(model), info
    net.eval()
    if fold_bn:
        net, info["folded_bn"] = fold_batchnorm(net)
        net.eval()
    if channels_last:
        net.to(memory_format=torch.channels_last)
        info["channels_last"] = True
    for p in net.parameters():
        p.requires_grad_(False)
    if compile:
        net = torch.compile(net)
        info["compiled"] = True
    return net, info


class _EvalCall:
    """Calls ``model`` in eval mode and restores its training flag (for uncopyable models)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        was = self.model.training
        self.model.eval()
        try:
            return self.model(x)
        finally:
            self.model.train(was)


# -- the forward chunk -------------------------------------------------------------------------

def chunk_candidates(block: int, cap: int, minimum: int = 32) -> list[int]:
    """Forward batch sizes worth trying, ascending: divisors-ish of the noise ``block``
    (ceil(block / k), k = 8, 4, 2, 1) and multiples of it up to ``cap`` (so that a chunk never
    straddles a noise block: noise depends on the block only, never on the chunk)."""
    sizes = {math.ceil(block / k) for k in (8, 4, 2, 1)}
    m = 2
    while block * m <= cap:
        sizes.add(block * m)
        m *= 2
    low = min(minimum, block)
    return sorted(s for s in sizes if low <= s <= max(cap, block) and (s <= block or s % block == 0))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe_chunk_size(
    forward: Callable[[torch.Tensor], torch.Tensor],
    sample_shape: Sequence[int],
    candidates: Sequence[int],
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
    amp_dtype: torch.dtype | None = None,
    rounds: int = 2,
) -> int:
    """The candidate forward batch size with the highest samples/s: a short timed probe on a
    constant input (no random numbers drawn, so no generator is touched). Candidates are tried
    in ascending order, ``rounds`` timings each (best kept), and the search stops at the first
    size that is not at least 5 % faster than every smaller one."""
    candidates = sorted(set(int(c) for c in candidates))
    if len(candidates) == 1:
        return candidates[0]
    autocast = torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    rate: dict[int, float] = {}
    with torch.inference_mode(), autocast:
        x = allocate(candidates[-1], sample_shape, device=device, dtype=dtype, memory_format=memory_format)
        x.fill_(0.5)
        forward(x[: candidates[0]]).argmax(1)  # warm-up
        _sync(device)
        for c in candidates:
            best = math.inf
            for _ in range(rounds):
                t0 = time.perf_counter()
                forward(x[:c]).argmax(1)
                _sync(device)
                best = min(best, time.perf_counter() - t0)
            before = max(rate.values(), default=0.0)
            rate[c] = c / best
            if rate[c] < 1.05 * before:  # no longer gaining 5 %: larger sizes rarely recover
                break
    return max(rate, key=rate.get)


# -- memory ------------------------------------------------------------------------------------

def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (CUDA: ``mem_get_info``; CPU: MemAvailable of /proc/meminfo),
    or None where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu" and os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


def bytes_per_row(forward: Callable[[torch.Tensor], torch.Tensor], sample_shape: Sequence[int],
                  device: torch.device, dtype: torch.dtype = torch.float32) -> int:
    """Memory one noisy sample costs in a forward batch: the noise and input rows plus every
    module's output for it (measured with forward hooks on a batch of 2; an upper bound, since
    inference frees activations as it goes)."""
    row = math.prod(sample_shape) * torch.empty((), dtype=dtype).element_size()
    total = [0]
    hooks = []
    mods = forward.modules() if isinstance(forward, nn.Module) else []
    for m in mods:
        if not list(m.children()):
            hooks.append(m.register_forward_hook(
                lambda _m, _i, out: total.__setitem__(0, total[0] + (out.nelement() * out.element_size()
                                                                     if isinstance(out, torch.Tensor) else 0))))
    try:
        with torch.inference_mode():
            forward(torch.zeros((2, *sample_shape), device=device, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
    return 3 * row + total[0] // 2


def memory_cap(forward: Callable[[torch.Tensor], torch.Tensor], sample_shape: Sequence[int],
               device: torch.device, dtype: torch.dtype = torch.float32, fraction: float = 0.5,
               limit: int = 1 << 16) -> int:
    """The largest forward batch (rows) using at most ``fraction`` of the free memory, at most
    ``limit``: the cap ``--max-batch auto`` probes under."""
    free = available_memory(device)
    if free is None:
        return 1000
    return max(1, min(limit, int(free * fraction) // bytes_per_row(forward, sample_shape, device, dtype)))


def allocate(rows: int, sample_shape: Sequence[int], *, device: torch.device, dtype: torch.dtype,
             memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """``torch.empty((rows, *sample_shape))``; a size that does not fit in memory is an
    ``ArgumentError("batch_size")`` (checked against free memory first: on Linux a huge CPU
    allocation may otherwise succeed and be killed when touched)."""
    need = rows * math.prod(sample_shape) * torch.empty((), dtype=dtype).element_size()
    free = available_memory(device)
    msg = (f"batch_size={rows} needs {need / 2**30:.2f} GiB for one noisy batch on {device}, more than is free"
           f"{'' if free is None else f' ({free / 2**30:.2f} GiB)'}: use a smaller batch_size (CLI: --batch, the noise block)")
    if free is not None and need > free:
        raise ArgumentError("batch_size", msg)
    try:
        return torch.empty((rows, *sample_shape), device=device, dtype=dtype, memory_format=memory_format)
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        raise ArgumentError("batch_size", msg) from exc
