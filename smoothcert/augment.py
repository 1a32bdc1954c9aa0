"""Batched, on-device training augmentations on (B, C, H, W) images in [0, 1].

* ``gaussian``: x + N(0, sigma^2 I) (via ``smoothcert.noise``).
* ``crop_flip``: random crop after zero padding plus random horizontal flip (the standard
  CIFAR/SVHN training augmentation), one crop and flip per image.
* ``cutout`` (DeVries & Taylor, 2017): a size x size square, centred on a uniform pixel and
  clipped at the border, set to ``fill``.
* ``mixup`` (Zhang et al., 2018): x' = lam x + (1 - lam) x_perm, lam ~ Beta(alpha, alpha).
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
``Augmentation("crop-flip+cutmix", sigma=0.25)`` chains augmentations by name (the spec of
``--augment``; see ``Augmentation``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import betaincinv

from .losses import soft_cross_entropy
from .noise import add_gaussian_noise


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


def _check_alpha(alpha: float) -> float:
    if not (float(alpha) > 0):
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    return float(alpha)


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


def mixup(x: torch.Tensor, y: torch.Tensor | LabelMix, alpha: float = 1.0,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, LabelMix]:
    """MixUp: x' = lam x + (1 - lam) x[perm], target lam y + (1 - lam) y[perm], lam ~ Beta(alpha,
    alpha) per image, ``perm`` a random permutation of the batch."""
    _check_images(x)
    alpha = _check_alpha(alpha)
    B = x.shape[0]
    lam = sample_beta(alpha, alpha, B, generator)
    perm = torch.randperm(B, generator=generator)
    lam, perm = lam.to(x.device), perm.to(x.device)
    lam_x = lam.to(x.dtype).view(-1, 1, 1, 1)
    return lam_x * x + (1 - lam_x) * x[perm], _as_labels(y).mixed_with(perm, lam)


def cutmix(x: torch.Tensor, y: torch.Tensor | LabelMix, alpha: float = 1.0,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, LabelMix]:
    """CutMix: per image, lam ~ Beta(alpha, alpha) and a box of side ratio sqrt(1 - lam) with a
    uniform centre (clipped at the border) is filled from x[perm]; the target is
    lam' y + (1 - lam') y[perm] with lam' = 1 - (box area) / (H W), the area actually pasted."""
    _check_images(x)
    alpha = _check_alpha(alpha)
    B, _, H, W = x.shape
    lam = sample_beta(alpha, alpha, B, generator)
    perm = torch.randperm(B, generator=generator)
    ratio = torch.sqrt(1.0 - lam)
    cut_h, cut_w = (H * ratio).long(), (W * ratio).long()
    y0, y1, x0, x1 = _boxes(B, H, W, cut_h, cut_w, generator)
    lam_adj = 1.0 - ((y1 - y0) * (x1 - x0)).float() / float(H * W)
    mask = _box_mask(y0, y1, x0, x1, H, W, x.device)
    perm = perm.to(x.device)
    return torch.where(mask, x[perm], x), _as_labels(y).mixed_with(perm, lam_adj.to(x.device))


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


# -- chains --------------------------------------------------------------------------------------
AUGMENTATIONS = ("gaussian", "crop-flip", "crop", "cutout", "cutmix", "mixup")
_VALUE = {"crop-flip": "padding (pixels)", "crop": "padding (pixels)", "cutout": "size (pixels)", "cutmix": "alpha", "mixup": "alpha"}


class Augmentation:
    """A chain of augmentations from a spec like ``"crop-flip+cutmix:0.5"``: names from
    ``AUGMENTATIONS`` joined by ``+``, each with an optional ``:value`` -- crop-flip's padding
    (default side // 8, at least 1), cutout's size (default side // 2), cutmix's and mixup's
    alpha (default 1.0). ``gaussian`` takes no value: it adds N(0, sigma^2 I) with the ``sigma``
    given here. With sigma > 0 and no ``gaussian`` in the chain, the noise is appended as the
    last step, so that every training input is a noisy input (the model can be certified).

    ``"none"`` is the empty chain (just the noise, if sigma > 0).

    ``aug(x, y) -> (x', LabelMix)``, with the global RNGs (CPU for parameters, x's device for noise).
    """

    def __init__(self, spec: str, sigma: float = 0.0):
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"augment must be a non-empty string like 'cutmix' or 'crop-flip+cutout:8', got {spec!r}")
        if not (float(sigma) >= 0):
            raise ValueError(f"sigma must be >= 0, got {sigma!r}")
        self.sigma = float(sigma)
        steps: list[tuple[str, float | None]] = []
        for part in ([] if spec.strip() == "none" else spec.replace(" ", "").split("+")):
            name, _, raw = part.partition(":")
            if name not in AUGMENTATIONS:
                raise ValueError(f"augment: unknown augmentation {name!r}; choose from {', '.join(AUGMENTATIONS)}")
            value: float | None = None
            if raw:
                if name == "gaussian":
                    raise ValueError("augment: gaussian takes no value (its sigma is --sigma)")
                try:
                    value = float(raw)
                except ValueError:
                    raise ValueError(f"augment: {name}'s {_VALUE[name]} must be a number, got {raw!r}") from None
                if name in ("crop-flip", "crop", "cutout") and (value != int(value) or value < (0 if name != "cutout" else 1)):
                    raise ValueError(f"augment: {name}'s {_VALUE[name]} must be an integer >= "
                                     f"{0 if name != 'cutout' else 1}, got {raw!r}")
                if name in ("cutmix", "mixup") and not value > 0:
                    raise ValueError(f"augment: {name}'s alpha must be > 0, got {raw!r}")
            steps.append((name, value))
        has_noise = any(n == "gaussian" for n, _ in steps)
        if has_noise and self.sigma == 0:
            raise ValueError("augment: gaussian needs sigma > 0 (--sigma)")
        if self.sigma > 0 and not has_noise:
            steps.append(("gaussian", None))
        self.steps = steps

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
        side = min(x.shape[-2:])
        for name, value in self.steps:
            if name == "gaussian":
                x = gaussian(x, self.sigma)
            elif name in ("crop-flip", "crop"):
                x = crop_flip(x, int(value) if value is not None else max(1, side // 8), flip=name == "crop-flip")
            elif name == "cutout":
                x = cutout(x, int(value) if value is not None else max(1, side // 2))
            elif name == "cutmix":
                x, target = cutmix(x, target, 1.0 if value is None else value)
            else:  # mixup
                x, target = mixup(x, target, 1.0 if value is None else value)
        return x, target

    def __repr__(self) -> str:
        return f"Augmentation({self.spec!r}, sigma={self.sigma})"


__all__ = ["AUGMENTATIONS", "Augmentation", "LabelMix", "crop_flip", "cutmix", "cutout", "downsample", "gaussian",
           "mixup", "sample_beta"]
