"""Dual normalisation of AugMax (Wang et al., NeurIPS 2021, Sec. 3.3): DuBN and DuBIN.

* ``DuBN``: two BatchNorms over the same channels, one for clean and AugMix inputs ("clean")
  and one for AugMax inputs ("adv"). Which one a forward uses is the module's ``route``, set
  for a whole model with ``dual_bn_route(model, "adv")``; ``dual_bn_route(model, n)`` sends the
  first n samples of a batch the clean way and the rest the adversarial way, in one forward.
  The default route, and so the test-time one, is "clean".
* ``DuBIN``: IBN-Net's instance-batch mix with a DuBN for the batch half: the first half of the
  channels goes through an affine InstanceNorm, the rest through a DuBN.

``apply_normalization(net, "dubn")`` turns every BatchNorm2d of ``net`` into a DuBN;
``apply_normalization(net, "dubin")`` also replaces the first normalisation of each early residual block
(every block before the last stage, as IBN-Net does) with a DuBIN. Residual blocks are the
CIFAR ResNet, pre-activation ResNet and Wide ResNet blocks of ``smoothcert.models``, and any
class added with ``register_residual_block``; a model built from them works as is.

The word: a model's *normalization* (``NORMALIZATIONS``: bn, dubn, dubin; ``create_model``'s
``normalization``, ``train --norm-layers``) is its kind of normalisation layers; ``norm`` in the
library is always an Lp norm (a certificate's, an attack's). ``NORMS`` and ``apply_norm`` are the
second release's names of ``NORMALIZATIONS`` and ``apply_normalization``, kept for its callers.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..validation import ArgumentError

ROUTES = ("clean", "adv")
NORMALIZATIONS = ("bn", "dubn", "dubin")
NORMS = NORMALIZATIONS  # the second release's name


class DuBN(nn.Module):
    """Dual BatchNorm: ``bn_clean`` for route "clean" (default, test time), ``bn_adv`` for "adv".
    Route n (an int) splits a batch: its first n samples go through ``bn_clean`` and the rest
    through ``bn_adv``, each part with its own batch statistics, as two forwards would."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__()
        self.bn_clean = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)
        self.bn_adv = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)
        self.route: str | int = "clean"

    @property
    def num_features(self) -> int:
        return self.bn_clean.num_features

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> "DuBN":
        """A DuBN whose two branches both start as copies of ``bn`` (parameters and statistics)."""
        if not (bn.affine and bn.track_running_stats):
            raise ValueError("DuBN converts affine BatchNorm2d layers with running statistics only")
        dual = cls(bn.num_features, bn.eps, bn.momentum)
        dual.bn_clean.load_state_dict(bn.state_dict())
        dual.bn_adv.load_state_dict(bn.state_dict())
        dual.train(bn.training)
        return dual.to(device=bn.weight.device, dtype=bn.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        route = self.route
        if route == "clean":
            return self.bn_clean(x)
        if route == "adv":
            return self.bn_adv(x)
        n = int(route)
        if n <= 0:
            return self.bn_adv(x)
        if n >= x.shape[0]:
            return self.bn_clean(x)
        return torch.cat([self.bn_clean(x[:n]), self.bn_adv(x[n:])])

    def extra_repr(self) -> str:
        return f"{self.num_features}, route={self.route!r}"


class DuBIN(nn.Module):
    """Instance + dual batch normalisation: channels [0, num_in) through an affine InstanceNorm2d,
    channels [num_in, C) through a DuBN; num_in = floor(C * in_ratio)."""

    def __init__(self, num_features: int, in_ratio: float = 0.5, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__()
        num_in = int(num_features * in_ratio)
        if not 0 < num_in < num_features:
            raise ValueError(f"DuBIN needs both halves non-empty: {num_features} channels with in_ratio {in_ratio}")
        self.num_in = num_in
        self.instance_norm = nn.InstanceNorm2d(num_in, eps=eps, affine=True)
        self.dual_bn = DuBN(num_features - num_in, eps, momentum)

    @classmethod
    def from_norm(cls, norm: nn.Module, in_ratio: float = 0.5) -> "DuBIN":
        """A DuBIN in place of ``norm`` (a BatchNorm2d or DuBN): the batch half keeps ``norm``'s
        statistics and affine parameters of its channels; the instance half its affine parameters."""
        bns = [norm] if isinstance(norm, nn.BatchNorm2d) else [norm.bn_clean, norm.bn_adv]
        ref = bns[0]
        new = cls(ref.num_features, in_ratio, ref.eps, ref.momentum)
        k = new.num_in
        with torch.no_grad():
            new.instance_norm.weight.copy_(ref.weight[:k])
            new.instance_norm.bias.copy_(ref.bias[:k])
            sources = bns if len(bns) == 2 else bns * 2  # (clean, adv)
            for src, dst in zip(sources, (new.dual_bn.bn_clean, new.dual_bn.bn_adv)):
                dst.weight.copy_(src.weight[k:])
                dst.bias.copy_(src.bias[k:])
                dst.running_mean.copy_(src.running_mean[k:])
                dst.running_var.copy_(src.running_var[k:])
                dst.num_batches_tracked.copy_(src.num_batches_tracked)
        new.train(norm.training)
        return new.to(device=ref.weight.device, dtype=ref.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, [self.num_in, x.shape[1] - self.num_in], dim=1)
        return torch.cat([self.instance_norm(a.contiguous()), self.dual_bn(b.contiguous())], dim=1)


# -- routing --------------------------------------------------------------------------------------
def has_dual_bn(model: nn.Module) -> bool:
    """Whether ``model`` contains DuBN layers (and so routes clean and AugMax inputs apart)."""
    return any(isinstance(m, DuBN) for m in model.modules())


@contextmanager
def dual_bn_route(model: nn.Module, route: str | int) -> Iterator[nn.Module]:
    """Route every DuBN of ``model`` through branch ``route`` inside the block: "clean", "adv",
    or an integer n >= 0 (the first n samples of each batch clean, the rest adv: one forward
    for both kinds). Each layer's previous route is restored on exit, also after an exception."""
    if isinstance(route, bool) or not (route in ROUTES or (isinstance(route, int) and route >= 0)):
        raise ValueError(f"route must be one of {', '.join(ROUTES)} or an integer >= 0, got {route!r}")
    layers = [m for m in model.modules() if isinstance(m, DuBN)]
    before = [m.route for m in layers]
    for m in layers:
        m.route = route
    try:
        yield model
    finally:
        for m, r in zip(layers, before):
            m.route = r


# -- conversion ----------------------------------------------------------------------------------
_RESIDUAL_BLOCKS: dict[type, str] = {}


def register_residual_block(cls: type, first_norm: str = "bn1") -> type:
    """Declare ``cls`` a residual block whose first normalisation is the attribute ``first_norm``
    (a BatchNorm2d), so that ``apply_normalization(net, "dubin")`` converts models built from it."""
    _RESIDUAL_BLOCKS[cls] = first_norm
    return cls


def _register_builtin_blocks() -> None:
    from .cifar_resnet import BasicBlock
    from .preact_resnet import PreActBlock
    from .wrn import WideBlock

    for cls in (BasicBlock, PreActBlock, WideBlock):
        _RESIDUAL_BLOCKS.setdefault(cls, "bn1")


def _convert_batchnorms(module: nn.Module) -> int:
    """Replace every BatchNorm2d below ``module`` by a DuBN copy, in place; returns how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, (DuBN, DuBIN)):
            continue
        if type(child) is nn.BatchNorm2d:
            setattr(module, name, DuBN.from_batchnorm(child))
            count += 1
        else:
            count += _convert_batchnorms(child)
    return count


def residual_blocks(net: nn.Module) -> list[nn.Module]:
    """The outermost residual blocks of ``net``, in module (= forward, for our models) order."""
    _register_builtin_blocks()
    blocks: list[nn.Module] = []

    def visit(m: nn.Module) -> None:
        for child in m.children():
            if type(child) in _RESIDUAL_BLOCKS:
                blocks.append(child)
            else:
                visit(child)

    visit(net)
    return blocks


def _block_width(block: nn.Module) -> int:
    return max((m.out_channels for m in block.modules() if isinstance(m, nn.Conv2d)), default=0)


def early_blocks(blocks: list[nn.Module]) -> list[nn.Module]:
    """The blocks before the last stage (a stage: consecutive blocks of the same output width);
    with a single stage, its first half."""
    if not blocks:
        return []
    widths = [_block_width(b) for b in blocks]
    last_stage_start = len(blocks) - 1
    while last_stage_start > 0 and widths[last_stage_start - 1] == widths[-1]:
        last_stage_start -= 1
    if last_stage_start == 0:
        return blocks[: (len(blocks) + 1) // 2]
    return blocks[:last_stage_start]


def apply_normalization(net: nn.Module, normalization: str) -> nn.Module:
    """Convert ``net`` in place to ``normalization`` (``NORMALIZATIONS``) and return it: "bn"
    leaves it alone, "dubn" makes every BatchNorm2d a DuBN, "dubin" does that and puts a DuBIN in
    the first normalisation of each early residual block. ArgumentError (``normalization``) if
    the model cannot take it."""
    if normalization not in NORMALIZATIONS:
        raise ArgumentError("normalization", f"normalization must be one of {', '.join(NORMALIZATIONS)}, got "
                                             f"{normalization!r}")
    if normalization == "bn":
        return net
    kind = type(net).__name__
    if normalization == "dubin":
        blocks = residual_blocks(net)
        if not blocks:
            raise ArgumentError("normalization", "normalization dubin needs a model with residual blocks "
                                                 "(cifar_resnet20/110, preact_resnet18, wrn, or a model built from "
                                                 f"their blocks); the model ({kind}) has none")
        for block in early_blocks(blocks):
            attr = _RESIDUAL_BLOCKS[type(block)]
            current = getattr(block, attr, None)
            if isinstance(current, DuBIN):
                continue
            if not isinstance(current, (nn.BatchNorm2d, DuBN)):
                raise ArgumentError("normalization", f"normalization dubin: {type(block).__name__}.{attr} is "
                                                     f"{type(current).__name__}, expected a BatchNorm2d")
            setattr(block, attr, DuBIN.from_norm(current))
    converted = _convert_batchnorms(net)
    if converted == 0 and not has_dual_bn(net):
        raise ArgumentError("normalization", f"normalization {normalization} needs a model with BatchNorm2d layers; "
                                             f"the model ({kind}) has none")
    return net


apply_norm = apply_normalization  # the second release's name


__all__ = ["DuBIN", "DuBN", "NORMALIZATIONS", "NORMS", "ROUTES", "apply_norm", "apply_normalization", "dual_bn_route",
           "early_blocks", "has_dual_bn", "register_residual_block", "residual_blocks"]
