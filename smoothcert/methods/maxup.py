"""MaxUp (Gong, Ren, Liu & Liu, CVPR 2021, Algorithm 1): train on the worst of m augmented copies.

For each training input x draw m augmented copies x'_1..x'_m, and minimise

    L(theta) = mean_i max_{j <= m} loss(f_theta(x'_ij), y'_ij)                       (MaxUp, Eq. 3)

whose gradient is the gradient of the loss of each input's argmax-loss copy. ``maxup_loss`` is
this objective for any model, data and augmentation (images, point clouds, token sequences: see
its docstring); the ``maxup`` method is the same code inside the image Trainer. Here:

* Selection (``maxup_select``) runs m forward passes without autograd, one augmented copy of the
  batch per pass, keeping only the running worst copy per input (and its labels), so memory does
  not grow with m. The chosen copies -- the very tensors drawn, not re-drawn -- then go through
  one ordinary forward/backward: a MaxUp step costs m no-grad forwards plus one augmentation step.
  With m = 1 no selection pass runs at all and the step *is* a plain augmentation step (``gauss``
  is ``maxup-gauss`` with m = 1).
* BatchNorm during selection: batch statistics, running statistics not updated
  (``methods.common.batch_stats_only``). Eval mode would rank the copies with running averages
  that lag the weights (and mean little early in training), i.e. by a different function than
  the one the gradient step optimises. Each selection pass is a whole batch of augmented copies,
  distributed like the training batch, so its statistics are those a training forward would use.
  Not updating the running statistics keeps them an average over the training forwards only:
  m selection passes per step would otherwise make them move m + 1 times as fast and describe
  the discarded copies too.
* Low-resolution selection (MaxUp, Sec. 4.2): with ``select_resolution`` R the copies are ranked
  on downsampled (shorter side R) versions and the chosen copy is trained at full resolution.
  The model must accept R-pixel inputs (convolutional nets with global pooling do).
* Warm-up: for the first ``warmup_epochs`` epochs m = 1 (plain augmentation), as the paper does
  for Gaussian MaxUp.
* Soft labels: the loss of a copy is the cross-entropy against its labels (``per_sample_cross_entropy``):
  hard labels, a (B, K) probability tensor, or ``augment.LabelMix`` (CutMix, MixUp); the
  original hard labels count for the training accuracy.
"""
from __future__ import annotations

from typing import Any, Callable, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import AugmentFn, Augmentation, LabelMix, downsample, with_noise
from ..losses import soft_cross_entropy
from ..noise import noise_params, training_noise
from ..validation import ArgumentError, check_int, check_sigma
from . import register_method
from .base import Method
from .common import batch_stats_only, unwrap

Batch = Union[torch.Tensor, tuple[torch.Tensor, ...]]  # one tensor or a tuple of tensors, batch first
Labels = Union[torch.Tensor, LabelMix]  # (B,) hard labels, (B, K) soft labels, or a LabelMix
LossFn = Callable[[torch.Tensor, Any], torch.Tensor]  # loss_fn(logits, y_aug) -> (B,) per-sample losses


def per_sample_cross_entropy(logits: torch.Tensor, y: Labels) -> torch.Tensor:
    """(B,) cross-entropy of each row against hard labels (B,) (integer), soft labels (B, K)
    (float, rows summing to 1) or a ``LabelMix``: ``maxup_loss``'s default ``loss_fn``."""
    if isinstance(y, LabelMix):
        return y.per_sample_loss(logits)
    if isinstance(y, torch.Tensor) and y.dim() == 1 and not y.is_floating_point():
        return F.cross_entropy(logits, y, reduction="none")
    if isinstance(y, torch.Tensor) and y.dim() == 2 and y.is_floating_point():
        return soft_cross_entropy(logits, y.to(logits.dtype), reduction="none")
    raise ArgumentError("y", f"y must be (B,) integer labels, (B, K) soft labels or a LabelMix, got "
                             f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")


def _forward(model: nn.Module, x: Batch) -> torch.Tensor:
    return model(*x) if isinstance(x, (tuple, list)) else model(x)


def _batch_size(x: Any, arg: str, what: str) -> int:
    """The common first dimension of a tensor or a tuple of tensors; ArgumentError(arg) otherwise."""
    parts = list(x) if isinstance(x, (tuple, list)) else [x]
    if not parts or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in parts):
        raise ArgumentError(arg, f"{what} must be a tensor or a tuple of tensors with a batch dimension, "
                                 f"got {type(x).__name__}")
    sizes = {t.shape[0] for t in parts}
    if len(sizes) != 1:
        raise ArgumentError(arg, f"{what} holds tensors of different batch sizes {sorted(sizes)}")
    return sizes.pop()


def _nonfinite(v: Any) -> torch.Tensor | None:
    """A 0-dim bool tensor (no host sync): does ``v`` hold a NaN or inf? None if nothing to check."""
    parts = list(v) if isinstance(v, (tuple, list)) else [v.weights] if isinstance(v, LabelMix) else [v]
    flags = [~torch.isfinite(t).all() for t in parts if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return torch.stack(flags).any() if flags else None


def _where(better: torch.Tensor, new: Any, old: Any) -> Any:
    """Per input: ``new`` where ``better`` (B,), else ``old`` (tensors, tuples of them, LabelMix)."""
    if isinstance(new, LabelMix) and isinstance(old, LabelMix):
        if new.labels.shape != old.labels.shape:
            raise ArgumentError("augment", f"augment returned LabelMix labels of {old.labels.shape[0]} and then "
                                           f"{new.labels.shape[0]} components; every call must return one shape")
        return new.where(better, old)
    if isinstance(new, (tuple, list)) and isinstance(old, (tuple, list)) and len(new) == len(old):
        return tuple(_where(better, a, b) for a, b in zip(new, old))
    if isinstance(new, torch.Tensor) and isinstance(old, torch.Tensor) and new.shape == old.shape:
        return torch.where(better.view(-1, *([1] * (new.dim() - 1))), new, old)
    raise ArgumentError("augment", "augment returned copies of different shapes or kinds in one step; "
                                   "every call must return the same structure")


def _check_copy(xa: Any, ya: Any, B: int) -> torch.Tensor | None:
    """Batch sizes of one augmented copy; returns its non-finite flag (checked later, in one sync)."""
    nx = _batch_size(xa, "augment", "augment's x_aug")
    if nx != B:
        raise ArgumentError("augment", f"augment returned x_aug with batch size {nx}, expected {B} "
                                       f"(one copy per input)")
    ny = ya.labels.shape[1] if isinstance(ya, LabelMix) else _batch_size(ya, "augment", "augment's y_aug")
    if ny != B:
        raise ArgumentError("augment", f"augment returned y_aug with batch size {ny}, expected {B} "
                                       f"(one label per input)")
    flags = [f for f in (_nonfinite(xa), _nonfinite(ya)) if f is not None]
    return torch.stack(flags).any() if flags else None


def _per_sample(loss_fn: LossFn, logits: torch.Tensor, ya: Any, B: int) -> torch.Tensor:
    loss = loss_fn(logits, ya)
    if not isinstance(loss, torch.Tensor) or tuple(loss.shape) != (B,):
        got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ArgumentError("loss_fn", f"loss_fn must return one loss per input, shape ({B},), got {got}")
    return loss


def _augment_once(augment: AugmentFn, x: Batch, y: Any, B: int) -> tuple[Any, Any, torch.Tensor | None]:
    out = augment(x, y)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ArgumentError("augment", f"augment must return a pair (x_aug, y_aug), got {type(out).__name__}")
    xa, ya = out
    return xa, ya, _check_copy(xa, ya, B)


def _raise_if_nonfinite(flag: torch.Tensor | None) -> None:
    if flag is not None and bool(flag):
        raise ArgumentError("augment", "augment returned non-finite values (NaN or inf) in x_aug or y_aug")


def maxup_select(model: nn.Module, x: Batch, y: Any, augment: AugmentFn, m: int, loss_fn: LossFn | None = None,
                 *, select_forward: Callable[[Any], torch.Tensor] | None = None) -> tuple[Any, Any]:
    """Each input's argmax-loss copy among ``m`` augmented copies, and its labels: ``(x_sel, y_sel)``.

    Copy j is the j-th call ``augment(x, y)``; copies are ranked by ``loss_fn`` without autograd
    and with BatchNorm on batch statistics and its running statistics untouched
    (``batch_stats_only``); ties keep the earliest copy. Only the running worst copy is kept (at
    most three copies are alive at once, whatever m). ``select_forward(x_aug)`` replaces
    ``model(x_aug)`` for ranking (low-resolution selection). With m = 1: one draw, no forward.
    ArgumentError for m < 1, a non-callable ``augment``, or copies of the wrong batch size,
    inconsistent structure or non-finite values."""
    m = check_int("m", m, 1)
    if not callable(augment):
        raise ArgumentError("augment", f"augment must be a callable augment(x, y) -> (x_aug, y_aug), got {augment!r}")
    loss_fn = per_sample_cross_entropy if loss_fn is None else loss_fn
    B = _batch_size(x, "x", "x")
    forward = (lambda xa: _forward(model, xa)) if select_forward is None else select_forward
    best_x, best_y, bad = _augment_once(augment, x, y, B)
    if m > 1:
        with torch.no_grad(), batch_stats_only(model):
            best_loss = _per_sample(loss_fn, forward(best_x), best_y, B).float()
            for _ in range(m - 1):
                xa, ya, bad_j = _augment_once(augment, x, y, B)
                bad = bad_j if bad is None else bad if bad_j is None else bad | bad_j
                loss = _per_sample(loss_fn, forward(xa), ya, B).float()
                better = loss > best_loss
                best_x, best_y = _where(better, xa, best_x), _where(better, ya, best_y)
                best_loss = torch.where(better, loss, best_loss)
                del xa, ya, loss
    _raise_if_nonfinite(bad)
    return best_x, best_y


def maxup_loss(model: nn.Module, x: Batch, y: Any, augment: AugmentFn, m: int,
               loss_fn: LossFn | None = None) -> torch.Tensor:
    """MaxUp's objective (Gong et al., 2021, Eq. 3) for any model, data and augmentation:
    mean_i max_{j <= m} loss_fn(model(x'_ij), y'_ij), with its autograd graph; its gradient is
    that of each input's argmax-loss copy.

    * ``x``: a batch, one tensor or a tuple of tensors (``model(*x)``), batch dimension first;
    * ``augment(x, y) -> (x_aug, y_aug)``: any callable drawing one augmented copy of the whole
      batch (same structure and batch size; y_aug may be (B,) hard labels, (B, K) soft labels or
      a ``LabelMix``); ``smoothcert.augment.get_augmentation`` has ready-made image ones;
    * ``loss_fn(logits, y_aug) -> (B,)`` per-sample losses; default ``per_sample_cross_entropy``.

    The m copies are ranked without autograd, with BatchNorm running statistics untouched; the
    worst copy of each input (the tensor drawn, not a new draw) then takes one forward with
    autograd through ``model``. Memory does not grow with m; m = 1 is plain augmentation. Under
    DistributedDataParallel the ranking passes run on the wrapped module. ArgumentError (naming
    ``m``, ``augment`` or ``loss_fn``) for m < 1, copies of the wrong batch size or non-finite
    copies, or losses that are not one per input.

    Point clouds ((B, N, 3), the paper's ModelNet40 setting: rotation about the vertical axis,
    scaling, jitter)::

        def augment(x, y):
            B = x.shape[0]
            t = 2 * math.pi * torch.rand(B, device=x.device)
            c, s, o, z = t.cos(), t.sin(), torch.ones_like(t), torch.zeros_like(t)
            rot = torch.stack([c, z, s, z, o, z, -s, z, c], 1).view(B, 3, 3)  # about the y (up) axis
            scale = torch.empty(B, 1, 3, device=x.device).uniform_(0.8, 1.25)
            return (x @ rot) * scale + (0.01 * torch.randn_like(x)).clamp(-0.05, 0.05), y

        loss = maxup_loss(pointnet, points, labels, augment, m=4)
        loss.backward()

    Token sequences: the callable draws the perturbation and the model applies it to its
    embedding output, so that the selected copy is trained with exactly its own draw
    (``model(tokens, noise) = head(embedding(tokens) + noise)``)::

        def embedding_noise(x, y):
            return (x, 0.1 * torch.randn(*x.shape, embed_dim)), y

        def word_dropout(x, y):  # drop 10% of the tokens (to the padding id 0)
            return x.masked_fill(torch.rand(x.shape) < 0.1, 0), y

        loss = maxup_loss(model, tokens, labels, embedding_noise, m=4)
    """
    x_sel, y_sel = maxup_select(unwrap(model), x, y, augment, m, loss_fn)
    return _per_sample(per_sample_cross_entropy if loss_fn is None else loss_fn, _forward(model, x_sel),
                       y_sel, _batch_size(x_sel, "augment", "augment's x_aug")).mean()


@register_method("maxup")
class MaxUp(Method):
    """Worst-of-m training over any augmentation: a chain spec (``augment.Augmentation``), e.g.
    ``MaxUp("cutmix", m=4)``, ``MaxUp("crop-flip+cutout", m=4, select_resolution=16)``, or any
    callable ``augment(x, y) -> (x_aug, y_aug)`` (see ``maxup_loss``), e.g.
    ``MaxUp(get_augmentation("cutout", size=8), m=4)``; ``loss_fn`` as in ``maxup_loss``.
    With ``sigma`` > 0 the smoothing noise (Gaussian, or ``noise``: laplace, uniform) ends the
    chain (the model can then be certified at sigma with that noise)."""

    def __init__(self, augment: str | AugmentFn, m: int, select_resolution: int | None = None, sigma: float = 0.0,
                 warmup_epochs: int = 0, loss_fn: LossFn | None = None, noise: str = "gaussian"):
        super().__init__()
        self.m = check_int("m", m, 1)
        self.sigma = check_sigma(sigma)
        self.noise = training_noise(noise, self.sigma)
        if isinstance(augment, str):
            self.augmentation: AugmentFn = Augmentation(augment, self.sigma, self.noise)
            self.augment = augment.replace(" ", "")
        elif callable(augment):
            self.augmentation = with_noise(augment, self.sigma, self.noise)
            self.augment = getattr(augment, "__qualname__", type(augment).__name__)
        else:
            raise ArgumentError("augment", f"augment must be a spec like 'cutmix' or a callable augment(x, y) -> "
                                           f"(x_aug, y_aug), got {augment!r}")
        self.loss_fn = per_sample_cross_entropy if loss_fn is None else loss_fn
        self.select_resolution = None if select_resolution is None else check_int("select_resolution", select_resolution, 1)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, 0)
        self.current_m = self.m if self.warmup_epochs == 0 else 1

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """m = 1 during the first ``warmup_epochs`` epochs, ``m`` afterwards."""
        self.current_m = 1 if epoch < self.warmup_epochs else self.m

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``maxup_loss`` at the current m (ranking at ``select_resolution`` if set); records the
        training accuracy of the chosen copies against the original labels."""
        x_train, target = self.select(unwrap(model), x, y, self.current_m)
        logits = _forward(model, x_train)
        self._record_accuracy(logits, y)
        return _per_sample(self.loss_fn, logits, target, y.shape[0]).mean()

    def select(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: int) -> tuple[Any, Any]:
        """The argmax-loss copy of each input among ``m`` augmented copies, and its labels
        (``maxup_select``)."""
        forward = None if self.select_resolution is None else (lambda xa: self._forward_select(model, xa))
        return maxup_select(model, x, y, self.augmentation, m, self.loss_fn, select_forward=forward)

    def _forward_select(self, model: nn.Module, xa: torch.Tensor) -> torch.Tensor:
        small = downsample(xa, self.select_resolution)  # type: ignore[arg-type]
        try:
            return model(small)
        except RuntimeError as e:
            raise ValueError(f"select_resolution {self.select_resolution}: the model cannot take "
                             f"{small.shape[-2]}x{small.shape[-1]} inputs ({str(e).splitlines()[0][:120]})") from None

    def params(self) -> dict[str, Any]:
        return {"augment": self.augment, "m": self.m, "select_resolution": self.select_resolution,
                "sigma": self.sigma, "warmup_epochs": self.warmup_epochs, **noise_params(self.noise)}


@register_method("maxup-gauss")
class MaxUpGauss(MaxUp):
    """MaxUp over Gaussian noise for certified robustness (Gong et al., Sec. 4.3): train on the
    worst of m copies x + N(0, sigma^2 I); the first ``warmup_epochs`` epochs are plain Gaussian
    augmentation. ``noise``: laplace or uniform instead of Gaussian noise."""

    def __init__(self, sigma: float, m: int, warmup_epochs: int = 5, noise: str = "gaussian"):
        sigma = check_sigma(sigma, positive=m != 1)  # sigma = 0 only for gauss (plain training)
        super().__init__("none", m, sigma=sigma, warmup_epochs=warmup_epochs, noise=noise)

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "m": self.m, "warmup_epochs": self.warmup_epochs, **noise_params(self.noise)}


__all__ = ["MaxUp", "MaxUpGauss", "maxup_loss", "maxup_select", "per_sample_cross_entropy"]
