"""Batched, on-device training augmentations on (B, C, H, W) images in [0, 1].

* ``gaussian``: x + N(0, sigma^2 I) (via ``smoothcert.noise``).
* ``crop_flip``: random crop after zero padding plus random horizontal flip (the standard
  CIFAR/SVHN training augmentation), one crop and flip per image; ``crop``: the same without
  the flip (a random translation: digits).
* ``cutout`` (DeVries & Taylor, 2017): a size x size square, centred on a uniform pixel and
  clipped at the border, set to ``fill``.
* ``mixup`` (Zhang et al., 2018): x' = lam x + (1 - lam) x_perm, lam ~ Beta(mix_alpha, mix_alpha)
  (the papers' alpha; ``mix_alpha`` here, as ``alpha`` in smoothcert is a failure probability).
* ``cutmix`` (Yun et al., 2019): a box of area fraction 1 - lam (side ratio sqrt(1 - lam)) with a
  uniform centre, clipped at the border, is pasted from x_perm; the label weight is the pasted
  area's true fraction.
* ``downsample``: the low-resolution copy MaxUp selects on (Gong et al., 2021, Sec. 4.2).

Random parameters (offsets, boxes, lam, permutations) are drawn on the CPU -- with ``generator``
or the global CPU RNG -- and then moved to the images' device, so a seed gives the same
parameters on every device; Gaussian noise is drawn on the images' device. Each image of the
batch gets its own parameters (lam, box, offset); mixing partners are one permutation of the batch.

Mixing augmentations need soft labels. ``LabelMix`` holds them without knowing the number of
classes: target_b = sum_j weights[j, b] * e_{labels[j, b]}; hard labels are the case J = 1.
``get_augmentation(name, **kw)`` returns the ready-made augmentation ``name`` as a callable
``augment(x, y) -> (x_aug, y_aug)`` on a batch, the form ``maxup_loss`` and the ``maxup`` method
take (any such callable works there, for any data: see ``smoothcert.methods.maxup``).
``Augmentation("crop-flip+cutmix", sigma=0.25)`` chains them by name (the spec of ``--augment``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import betaincinv

from .losses import soft_cross_entropy
from .noise import add_gaussian_noise, get_noise, training_noise
from .registry import Registry
from .validation import ArgumentError, check_sigma


# -- labels --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelMix:
    """Soft labels as a mixture of hard ones: row b is sum_j weights[j, b] * e_{labels[j, b]}.

    ``labels`` is (J, B) int64 and ``weights`` (J, B) float with columns summing to 1."""

    labels: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def hard(cls, y: torch.Tensor) -> "LabelMix":
        return cls(y.view(1, -1), torch.ones((1, y.shape[0]), dtype=torch.float32, device=y.device))

    @property
    def is_hard(self) -> bool:
        return self.labels.shape[0] == 1

    def probs(self, num_classes: int) -> torch.Tensor:
        """The (B, num_classes) probability vectors."""
        J, B = self.labels.shape
        out = torch.zeros((B, num_classes), dtype=self.weights.dtype, device=self.labels.device)
        return out.scatter_add_(1, self.labels.t(), self.weights.t())

    def per_sample_loss(self, logits: torch.Tensor) -> torch.Tensor:
        """(B,) cross-entropy of each row: plain CE for hard labels, soft-label CE otherwise."""
        if self.is_hard:
            return F.cross_entropy(logits, self.labels[0], reduction="none")
        return soft_cross_entropy(logits, self.probs(logits.shape[1]).to(logits.dtype), reduction="none")

    def where(self, cond: torch.Tensor, other: "LabelMix") -> "LabelMix":
        """Per sample: this one's labels where ``cond`` (B,) is true, else ``other``'s."""
        return LabelMix(torch.where(cond, self.labels, other.labels), torch.where(cond, self.weights, other.weights))

    def mixed_with(self, perm: torch.Tensor, lam: torch.Tensor) -> "LabelMix":
        """lam * self + (1 - lam) * self[perm], per sample (lam of shape (B,))."""
        lam = lam.to(self.weights.dtype)
        return LabelMix(torch.cat([self.labels, self.labels[:, perm]]),
                        torch.cat([self.weights * lam, self.weights[:, perm] * (1 - lam)]))


def _as_labels(y: torch.Tensor | LabelMix) -> LabelMix:
    return y if isinstance(y, LabelMix) else LabelMix.hard(y)


# -- random parameters (CPU) ---------------------------------------------------------------------
def sample_beta(a: float, b: float, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws of Beta(a, b) as a float32 CPU tensor, by the inverse CDF of U(0, 1) draws (so that a
    ``generator`` controls them; torch's own Beta sampler takes none)."""
    if not (a > 0 and b > 0):
        raise ValueError(f"Beta parameters must be > 0, got a={a!r}, b={b!r}")
    u = torch.rand(n, generator=generator, dtype=torch.float64).numpy()
    return torch.from_numpy(np.asarray(betaincinv(a, b, u), dtype=np.float32))


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor, got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")


def _check_mix_alpha(mix_alpha: float) -> float:
    if not (float(mix_alpha) > 0):
        raise ValueError(f"mix_alpha must be > 0, got {mix_alpha!r}")
    return float(mix_alpha)


# -- augmentations -------------------------------------------------------------------------------
def gaussian(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, sigma^2 I) (``generator`` on x's device); identity for sigma == 0."""
    return add_gaussian_noise(x, sigma, generator)


def crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator | None = None,
              flip: bool = True) -> torch.Tensor:
    """Per image: a random H x W crop of the image zero-padded by ``padding`` on each side (offsets
    uniform in 0..2*padding), then (with ``flip``) a horizontal flip with probability 1/2.
    ``flip=False`` is a random translation by up to ``padding`` pixels (digits, text)."""
    _check_images(x)
    if isinstance(padding, bool) or int(padding) != padding or padding < 0:
        raise ValueError(f"padding must be an integer >= 0, got {padding!r}")
    B, C, H, W = x.shape
    p = int(padding)
    oy = torch.randint(0, 2 * p + 1, (B,), generator=generator)
    ox = torch.randint(0, 2 * p + 1, (B,), generator=generator)
    flip = torch.rand(B, generator=generator) < 0.5 if flip else torch.zeros(B, dtype=torch.bool)
    dev = x.device
    rows = (oy[:, None] + torch.arange(H)).to(dev)
    cols = ox[:, None] + torch.arange(W)
    cols = torch.where(flip[:, None], cols.flip(1), cols).to(dev)
    padded = F.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C)
    b = torch.arange(B, device=dev)[:, None, None]
    return padded[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def _boxes(B: int, H: int, W: int, cut_h: torch.Tensor, cut_w: torch.Tensor,
           generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """Boxes [y0, y1) x [x0, x1) with uniform centres in the image, clipped at the border."""
    cy = torch.randint(0, H, (B,), generator=generator)
    cx = torch.randint(0, W, (B,), generator=generator)
    y0, y1 = (cy - cut_h // 2).clamp(0, H), (cy + cut_h - cut_h // 2).clamp(0, H)
    x0, x1 = (cx - cut_w // 2).clamp(0, W), (cx + cut_w - cut_w // 2).clamp(0, W)
    return y0, y1, x0, x1


def _box_mask(y0, y1, x0, x1, H: int, W: int, device: torch.device) -> torch.Tensor:  # noqa: ANN001
    """(B, 1, H, W) boolean mask of the boxes."""
    r, c = torch.arange(H), torch.arange(W)
    mr = (r >= y0[:, None]) & (r < y1[:, None])
    mc = (c >= x0[:, None]) & (c < x1[:, None])
    return (mr[:, :, None] & mc[:, None, :]).unsqueeze(1).to(device)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None, fill: float = 0.0) -> torch.Tensor:
    """Per image: the ``size`` x ``size`` square centred on a uniform pixel, clipped at the border,
    set to ``fill`` (DeVries & Taylor's Cutout, in pixel space)."""
    _check_images(x)
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    B, _, H, W = x.shape
    side = torch.full((B,), int(size))
    mask = _box_mask(*_boxes(B, H, W, side, side, generator), H, W, x.device)
    return x.masked_fill(mask, fill)


def _mixup_images(x: torch.Tensor, mix_alpha: float, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MixUp's images, its permutation and its per-image lam (on x's device)."""
    _check_images(x)
    mix_alpha = _check_mix_alpha(mix_alpha)
    B = x.shape[0]
    lam = sample_beta(mix_alpha, mix_alpha, B, generator)
    perm = torch.randperm(B, generator=generator)
    lam, perm = lam.to(x.device), perm.to(x.device)
    lam_x = lam.to(x.dtype).view(-1, 1, 1, 1)
    return lam_x * x + (1 - lam_x) * x[perm], perm, lam


def mixup(x: torch.Tensor, y: torch.Tensor | LabelMix, mix_alpha: float = 1.0,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, LabelMix]:
    """MixUp: x' = lam x + (1 - lam) x[perm], target lam y + (1 - lam) y[perm], lam ~
    Beta(mix_alpha, mix_alpha) per image, ``perm`` a random permutation of the batch."""
    x2, perm, lam = _mixup_images(x, mix_alpha, generator)
    return x2, _as_labels(y).mixed_with(perm, lam)


def _cutmix_images(x: torch.Tensor, mix_alpha: float, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CutMix's images, its permutation and the per-image label weight lam' (on x's device)."""
    _check_images(x)
    mix_alpha = _check_mix_alpha(mix_alpha)
    B, _, H, W = x.shape
    lam = sample_beta(mix_alpha, mix_alpha, B, generator)
    perm = torch.randperm(B, generator=generator)
    ratio = torch.sqrt(1.0 - lam)
    cut_h, cut_w = (H * ratio).long(), (W * ratio).long()
    y0, y1, x0, x1 = _boxes(B, H, W, cut_h, cut_w, generator)
    lam_adj = 1.0 - ((y1 - y0) * (x1 - x0)).float() / float(H * W)
    mask = _box_mask(y0, y1, x0, x1, H, W, x.device)
    perm = perm.to(x.device)
    return torch.where(mask, x[perm], x), perm, lam_adj.to(x.device)


def cutmix(x: torch.Tensor, y: torch.Tensor | LabelMix, mix_alpha: float = 1.0,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, LabelMix]:
    """CutMix: per image, lam ~ Beta(mix_alpha, mix_alpha) and a box of side ratio sqrt(1 - lam) with a
    uniform centre (clipped at the border) is filled from x[perm]; the target is
    lam' y + (1 - lam') y[perm] with lam' = 1 - (box area) / (H W), the area actually pasted."""
    x2, perm, lam = _cutmix_images(x, mix_alpha, generator)
    return x2, _as_labels(y).mixed_with(perm, lam)


def downsample(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """``x`` resized (bilinear, antialiased) so that its shorter side is ``resolution`` pixels."""
    _check_images(x)
    if isinstance(resolution, bool) or int(resolution) != resolution or resolution < 1:
        raise ValueError(f"resolution must be an integer >= 1, got {resolution!r}")
    H, W = x.shape[-2:]
    if min(H, W) == resolution:
        return x
    scale = resolution / min(H, W)
    size = (max(1, round(H * scale)), max(1, round(W * scale)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


# -- the registry of ready-made augmentations -------------------------------------------------------
AugmentFn = Callable[[Any, Any], tuple[Any, Any]]  # augment(x, y) -> (x_aug, y_aug), on a whole batch

# name -> factory(**kw) -> augment; ``AUGMENTATIONS.get`` raises ArgumentError("augment") for unknown names
AUGMENTATIONS: Registry[Callable[..., AugmentFn]] = Registry("augmentation", "augment")
_VALUE: dict[str, str] = {}  # name -> the factory's argument that a chain spec's ``:value`` sets


def register_augmentation(name: str, value: str | None = None
                          ) -> Callable[[Callable[..., AugmentFn]], Callable[..., AugmentFn]]:
    """Register ``factory(**kw) -> augment`` in ``AUGMENTATIONS`` under ``name``; ``value``: the
    keyword that a chain spec's ``name:value`` sets."""
    def deco(factory: Callable[..., AugmentFn]) -> Callable[..., AugmentFn]:
        AUGMENTATIONS.add(name, factory)
        if value is not None:
            _VALUE[name] = value
        return factory

    return deco


def list_augmentations() -> list[str]:
    return AUGMENTATIONS.names()


def get_augmentation(name: str, **kw: Any) -> AugmentFn:
    """The ready-made augmentation ``name`` with parameters ``kw``: a callable ``augment(x, y) ->
    (x_aug, y_aug)`` on a batch, e.g. ``get_augmentation("cutout", size=8)``. Labels pass through
    augmentations that do not mix; mixing ones return ``LabelMix`` for hard labels (``LabelMix``
    in, ``LabelMix`` out) and a mixed (B, K) tensor for (B, K) soft labels. ArgumentError for an
    unknown name or a bad parameter."""
    factory = AUGMENTATIONS.get(name)
    try:
        return factory(**kw)
    except TypeError as e:  # unknown keyword
        raise ArgumentError("augment", f"augment: {name}: {e}") from None


def _mix_labels(y: Any, perm: torch.Tensor, lam: torch.Tensor) -> Any:
    """lam * y + (1 - lam) * y[perm] per sample: a LabelMix for hard labels, a tensor for (B, K)."""
    if isinstance(y, torch.Tensor) and y.dim() == 2 and y.is_floating_point():
        w = lam.to(y.dtype).view(-1, 1)
        return w * y + (1 - w) * y[perm]
    return _as_labels(y).mixed_with(perm, lam)


def _side(x: torch.Tensor, value: int | None, divisor: int) -> int:
    return int(value) if value is not None else max(1, min(x.shape[-2:]) // divisor)


def _check_pixels(name: str, what: str, value: Any, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value)
                              or value < minimum):
        raise ArgumentError("augment", f"augment: {name}'s {what} must be an integer >= {minimum}, got {value!r}")


def _check_positive(name: str, what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not np.isfinite(value):
        raise ArgumentError("augment", f"augment: {name}'s {what} must be > 0, got {value!r}")


@register_augmentation("gaussian")
def _gaussian_aug(sigma: float) -> AugmentFn:
    """x + N(0, sigma^2 I)."""
    check_sigma(sigma, positive=True)
    return lambda x, y: (gaussian(x, sigma), y)


@register_augmentation("crop-flip", "padding")
def _crop_flip_aug(padding: int | None = None) -> AugmentFn:
    """``crop_flip``; padding default: side // 8 (at least 1)."""
    _check_pixels("crop-flip", "padding (pixels)", padding, 0)
    return lambda x, y: (crop_flip(x, _side(x, padding, 8)), y)


@register_augmentation("crop", "padding")
def _crop_aug(padding: int | None = None) -> AugmentFn:
    """``crop_flip`` without the flip (a random translation); padding default: side // 8."""
    _check_pixels("crop", "padding (pixels)", padding, 0)
    return lambda x, y: (crop_flip(x, _side(x, padding, 8), flip=False), y)


@register_augmentation("cutout", "size")
def _cutout_aug(size: int | None = None) -> AugmentFn:
    """``cutout``; size default: side // 2."""
    _check_pixels("cutout", "size (pixels)", size, 1)
    return lambda x, y: (cutout(x, _side(x, size, 2)), y)


@register_augmentation("cutmix", "mix_alpha")
def _cutmix_aug(mix_alpha: float = 1.0) -> AugmentFn:
    """``cutmix`` with Beta(mix_alpha, mix_alpha)."""
    _check_positive("cutmix", "mix_alpha", mix_alpha)

    def aug(x: torch.Tensor, y: Any) -> tuple[torch.Tensor, Any]:
        x2, perm, lam = _cutmix_images(x, mix_alpha)
        return x2, _mix_labels(y, perm, lam)

    return aug


@register_augmentation("mixup", "mix_alpha")
def _mixup_aug(mix_alpha: float = 1.0) -> AugmentFn:
    """``mixup`` with Beta(mix_alpha, mix_alpha)."""
    _check_positive("mixup", "mix_alpha", mix_alpha)

    def aug(x: torch.Tensor, y: Any) -> tuple[torch.Tensor, Any]:
        x2, perm, lam = _mixup_images(x, mix_alpha)
        return x2, _mix_labels(y, perm, lam)

    return aug


def _identity(x: Any, y: Any) -> tuple[Any, Any]:
    return x, y


def with_noise(augment: AugmentFn, sigma: float, noise: str = "gaussian") -> AugmentFn:
    """``augment`` followed by the smoothing noise ``noise`` (any name of
    ``smoothcert.noise.NOISES``) at ``sigma`` (x + N(0, sigma^2 I) for ``gaussian``);
    ``augment`` itself for sigma 0."""
    sigma = check_sigma(sigma)
    if sigma == 0:
        return augment
    perturb = (lambda x: gaussian(x, sigma)) if noise == "gaussian" else get_noise(noise, sigma).perturb

    def aug(x: Any, y: Any) -> tuple[Any, Any]:
        xa, ya = augment(x, y)
        return perturb(xa), ya

    return aug


# -- chains --------------------------------------------------------------------------------------
class Augmentation:
    """A chain of augmentations from a spec like ``"crop-flip+cutmix:0.5"``: names from
    ``list_augmentations()`` joined by ``+``, each with an optional ``:value`` -- crop-flip's and crop's
    padding (default side // 8, at least 1), cutout's size (default side // 2), cutmix's and
    mixup's mix_alpha (lam ~ Beta(mix_alpha, mix_alpha), default 1.0). ``gaussian`` takes no
    value: it adds N(0, sigma^2 I) with the ``sigma`` given here. With sigma > 0 and no ``gaussian`` in the chain, the noise is appended
    as the last step, so that every training input is a noisy input (the model can be certified).
    Each step is ``get_augmentation(name, value)``.

    ``"none"`` is the empty chain (just the noise, if sigma > 0). ``noise`` names the smoothing
    noise the noise step draws (``smoothcert.noise.NOISES``; the step is spelled ``gaussian``
    in specs, and only the implied final step may draw another noise).

    ``aug(x, y) -> (x', LabelMix)``, with the global RNGs (CPU for parameters, x's device for noise).
    """

    def __init__(self, spec: str, sigma: float = 0.0, noise: str = "gaussian"):
        if not isinstance(spec, str) or not spec.strip():
            raise ArgumentError("augment", f"augment must be a non-empty string like 'cutmix' or 'crop-flip+cutout:8', "
                                           f"got {spec!r}")
        self.sigma = check_sigma(sigma)
        self.noise = training_noise(noise, self.sigma)
        steps: list[tuple[str, float | None]] = []
        for part in ([] if spec.strip() == "none" else spec.replace(" ", "").split("+")):
            name, _, raw = part.partition(":")
            AUGMENTATIONS.get(name)  # ArgumentError("augment") listing the choices if unknown
            value: float | None = None
            if raw:
                if name == "gaussian":
                    raise ArgumentError("augment", "augment: gaussian takes no value (its sigma is --sigma)")
                if name not in _VALUE:
                    raise ArgumentError("augment", f"augment: {name} takes no value, got {raw!r}")
                try:
                    value = float(raw)
                except ValueError:
                    raise ArgumentError("augment", f"augment: {name}'s {_VALUE[name]} must be a number, "
                                                   f"got {raw!r}") from None
            steps.append((name, value))
        has_noise = any(n == "gaussian" for n, _ in steps)
        if has_noise and self.sigma == 0:
            raise ArgumentError("augment", "augment: gaussian needs sigma > 0 (--sigma)")
        if has_noise and self.noise != "gaussian":
            raise ArgumentError("augment", f"augment: gaussian in the chain conflicts with noise {self.noise}")
        if self.sigma > 0 and not has_noise:
            steps.append(("gaussian", None))
        self.steps = steps
        self._fns = [with_noise(_identity, self.sigma, self.noise) if n == "gaussian" else
                     get_augmentation(n, **({} if v is None else {_VALUE[n]: int(v) if v.is_integer() and n not in
                                                                  ("cutmix", "mixup") else v}))
                     for n, v in steps]

    @property
    def mixes_labels(self) -> bool:
        return any(n in ("cutmix", "mixup") for n, _ in self.steps)

    @property
    def spec(self) -> str:
        """The normalised spec (with the implied final gaussian step)."""
        return "+".join(n if v is None else f"{n}:{v:g}" for n, v in self.steps) or "none"

    def __call__(self, x: torch.Tensor, y: torch.Tensor | LabelMix) -> tuple[torch.Tensor, LabelMix]:
        _check_images(x)
        target = _as_labels(y)
        for fn in self._fns:
            x, target = fn(x, target)
        return x, target

    def __repr__(self) -> str:
        return f"Augmentation({self.spec!r}, sigma={self.sigma})"


__all__ = ["AUGMENTATIONS", "AugmentFn", "Augmentation", "LabelMix", "crop_flip", "cutmix", "cutout", "downsample",
           "gaussian", "get_augmentation", "list_augmentations", "mixup", "register_augmentation", "sample_beta",
           "with_noise"]
