"""Batched image operations on (B, C, H, W) tensors in [0, 1], grayscale or colour, on any device.

These are the operations of AugMix (Hendrycks et al., ICLR 2020, Sec. 3) and AugMax (Wang et
al., NeurIPS 2021): autocontrast, equalize, posterize, rotate, solarize, shear x/y and translate
x/y. Each op takes its magnitude as a number or as a per-sample (B,) tensor. ``apply_op`` and
``random_chain`` draw per-sample magnitudes at an AugMix severity (level ~ U(0.1, severity),
severity in 1..10, as in the AugMix reference code):

=============  =======================================================
posterize      bits = 4 - floor(level * 4 / 10)
solarize       invert pixels >= (256 - floor(level * 256 / 10)) / 255
rotate         +-(level * 30 / 10) degrees, about the centre
shear_x/y      +-(level * 0.3 / 10), about the centre
translate_x/y  +-(level / 10) * side / 3 pixels (sub-pixel, bilinear)
=============  =======================================================

Random parameters are drawn on the CPU (with ``generator`` or the global CPU RNG) and only then
moved to the images' device, so a seed gives the same augmentation on CPU and on CUDA. Geometric
ops resample bilinearly with zero fill (PIL's AFFINE with BILINEAR); the intensity ops quantise
to 256 levels as PIL does on 8-bit images. No op is differentiated through its parameters.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .registry import Registry
from .validation import check_float, check_int

MAX_SEVERITY = 10


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor, got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")


def _per_sample(v: float | torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """A magnitude as a (B,) float tensor on x's device."""
    t = torch.as_tensor(v, dtype=torch.float32).to(x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"{name} must be a number or a ({x.shape[0]},) tensor, got shape {tuple(t.shape)}")
    return t


def _to_levels(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] as integer levels 0..255 (int64), as an 8-bit image holds them."""
    return (x * 255.0).round_().clamp_(0, 255).long()


# -- intensity ops -----------------------------------------------------------------------------
def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image linearly so that its darkest pixel becomes 0 and its
    brightest 1 (PIL ``ImageOps.autocontrast``, cutoff 0); constant channels are left alone."""
    _check_images(x)
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    ok = span > 0
    return torch.where(ok, (x - lo) / torch.where(ok, span, torch.ones_like(span)), x).clamp_(0, 1)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each channel of each image over 256 levels (PIL
    ``ImageOps.equalize``): with h the histogram and step = (N - h[last non-empty level]) // 255,
    level i maps to min(255, (step // 2 + sum_{j<i} h_j) // step); identity when step == 0."""
    _check_images(x)
    B, C, H, W = x.shape
    q = _to_levels(x).reshape(B * C, H * W)
    rows = torch.arange(B * C, device=x.device).unsqueeze(1)
    hist = torch.bincount((q + 256 * rows).view(-1), minlength=256 * B * C).view(B * C, 256)
    nonzero = hist > 0
    last = 255 - nonzero.flip(1).long().argmax(1)  # highest occupied level
    step = (hist.sum(1) - hist.gather(1, last.unsqueeze(1)).squeeze(1)) // 255
    cum_before = hist.cumsum(1) - hist
    safe_step = step.clamp(min=1).unsqueeze(1)
    lut = ((safe_step // 2 + cum_before) // safe_step).clamp_(max=255)
    identity = torch.arange(256, device=x.device).expand(B * C, 256)
    lut = torch.where((step > 0).unsqueeze(1), lut, identity)
    return (lut.gather(1, q).to(x.dtype) / 255.0).view(B, C, H, W)


def posterize(x: torch.Tensor, bits: int | torch.Tensor) -> torch.Tensor:
    """Keep the ``bits`` (1..8, per image) most significant bits of each 8-bit level."""
    _check_images(x)
    b = torch.as_tensor(bits).long()  # checked where it lives (the CPU for sampled magnitudes)
    if b.dim() == 0:
        b = b.expand(x.shape[0])
    if b.shape != (x.shape[0],) or bool(((b < 1) | (b > 8)).any()):
        raise ValueError(f"bits must be in 1..8, a number or one per image, got {bits!r}")
    shift = (8 - b).to(x.device).view(-1, 1, 1, 1)
    q = _to_levels(x)
    return ((q >> shift) << shift).to(x.dtype) / 255.0


def solarize(x: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """Invert every pixel at or above ``threshold`` (in [0, 1], per image): x -> 1 - x."""
    _check_images(x)
    t = _per_sample(threshold, x, "threshold").view(-1, 1, 1, 1).to(x.dtype)
    return torch.where(x >= t, 1.0 - x, x)


# -- geometric ops ------------------------------------------------------------------------------
def affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Resample each image through a (B, 2, 3) affine map from output to input pixel
    coordinates, both measured in pixels from the image centre (x right, y down): the output
    pixel at p reads the input at ``matrix[:, :, :2] @ p + matrix[:, :, 2]``. Bilinear, zero fill."""
    _check_images(x)
    B, _, H, W = x.shape
    m = matrix.to(device=x.device, dtype=torch.float32)
    if m.shape != (B, 2, 3):
        raise ValueError(f"matrix must have shape ({B}, 2, 3), got {tuple(m.shape)}")
    # pixel offsets from the centre -> grid_sample's normalised coordinates (align_corners=False)
    scale = torch.tensor([2.0 / W, 2.0 / H], device=x.device)
    theta = torch.empty_like(m)
    theta[:, :, :2] = m[:, :, :2] * scale.view(1, 2, 1) / scale.view(1, 1, 2)
    theta[:, :, 2] = m[:, :, 2] * scale
    grid = F.affine_grid(theta, [B, 1, H, W], align_corners=False).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _identity_matrix(n: int, device: torch.device) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device).repeat(n, 1, 1)


def rotate(x: torch.Tensor, degrees: float | torch.Tensor) -> torch.Tensor:
    """Rotate counter-clockwise (as displayed) by ``degrees`` about the centre (PIL ``rotate``)."""
    a = _per_sample(degrees, x, "degrees") * (math.pi / 180.0)
    c, s = torch.cos(a), torch.sin(a)
    m = torch.zeros(x.shape[0], 2, 3, device=x.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return affine(x, m)


def shear_x(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Horizontal shear about the centre: the output pixel (u, v) reads the input at (u + factor * v, v)."""
    m = _identity_matrix(x.shape[0], x.device)
    m[:, 0, 1] = _per_sample(factor, x, "factor")
    return affine(x, m)


def shear_y(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Vertical shear about the centre: the output pixel (u, v) reads the input at (u, v + factor * u)."""
    m = _identity_matrix(x.shape[0], x.device)
    m[:, 1, 0] = _per_sample(factor, x, "factor")
    return affine(x, m)


def translate_x(x: torch.Tensor, pixels: float | torch.Tensor) -> torch.Tensor:
    """Move the content right by ``pixels`` (may be fractional or negative); zero fill."""
    m = _identity_matrix(x.shape[0], x.device)
    m[:, 0, 2] = -_per_sample(pixels, x, "pixels")
    return affine(x, m)


def translate_y(x: torch.Tensor, pixels: float | torch.Tensor) -> torch.Tensor:
    """Move the content down by ``pixels`` (may be fractional or negative); zero fill."""
    m = _identity_matrix(x.shape[0], x.device)
    m[:, 1, 2] = -_per_sample(pixels, x, "pixels")
    return affine(x, m)


# -- random magnitudes at a severity ------------------------------------------------------------
def _check_severity(severity: float) -> float:
    return check_float("severity", severity, 1.0, MAX_SEVERITY)


def _levels(n: int, severity: float, generator: torch.Generator | None) -> torch.Tensor:
    """AugMix's ``sample_level``: U(0.1, severity), one per image (CPU)."""
    return 0.1 + (severity - 0.1) * torch.rand(n, generator=generator)


def _signs(n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1


def sample_magnitudes(op: str, n: int, severity: float, size: tuple[int, int],
                      generator: torch.Generator | None = None) -> torch.Tensor | None:
    """Per-image magnitudes of ``op`` at an AugMix ``severity`` for ``n`` images of ``size`` (H, W),
    drawn on the CPU (table in the module docstring); None for ops without a magnitude."""
    severity = _check_severity(severity)
    if op in ("autocontrast", "equalize"):
        return None
    level = _levels(n, severity, generator)
    if op == "posterize":
        return 4 - torch.floor(level * 4 / MAX_SEVERITY).long()
    if op == "solarize":
        return (256 - torch.floor(level * 256 / MAX_SEVERITY)) / 255.0
    sign = _signs(n, generator)
    if op == "rotate":
        return sign * level * 30 / MAX_SEVERITY
    if op in ("shear_x", "shear_y"):
        return sign * level * 0.3 / MAX_SEVERITY
    if op == "translate_x":
        return sign * level / MAX_SEVERITY * size[1] / 3
    if op == "translate_y":
        return sign * level / MAX_SEVERITY * size[0] / 3
    raise ValueError(f"unknown op {op!r}; choose from {', '.join(OPS)}")


# the AugMix operations: name -> op(x[, magnitude]), in the one Registry, in AugMix's order (a
# seeded ``random_chain`` draws op indices into it, so the order is part of the results)
OPS: Registry[Callable[..., torch.Tensor]] = Registry("AugMix operation", "op", ordered=True)
for _name, _op in (("autocontrast", autocontrast), ("equalize", equalize), ("posterize", posterize),
                   ("rotate", rotate), ("solarize", solarize), ("shear_x", shear_x), ("shear_y", shear_y),
                   ("translate_x", translate_x), ("translate_y", translate_y)):
    OPS.add(_name, _op)
del _name, _op


def apply_op(x: torch.Tensor, op: str, severity: float = 3, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply ``op`` to every image with its own random magnitude at AugMix ``severity``."""
    _check_images(x)
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; choose from {', '.join(OPS)}")
    mag = sample_magnitudes(op, x.shape[0], severity, (x.shape[2], x.shape[3]), generator)
    fn = OPS.get(op)
    return fn(x) if mag is None else fn(x, mag)


def random_chain(x: torch.Tensor, severity: float = 3, max_depth: int = 3,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One AugMix augmentation chain per image: each image draws a depth d ~ U{1..max_depth} and d
    ops uniformly from ``OPS`` (with repetition), each with its own magnitude at ``severity``.
    Images that drew the same op at a step are processed together."""
    _check_images(x)
    max_depth = check_int("max_depth", max_depth, 1)
    _check_severity(severity)
    B = x.shape[0]
    depth = torch.randint(1, max_depth + 1, (B,), generator=generator)
    choice = torch.randint(0, len(OPS), (max_depth, B), generator=generator)
    out = x.clone()
    for step in range(max_depth):
        active = depth > step
        for k, op in enumerate(OPS):
            idx = torch.nonzero(active & (choice[step] == k)).view(-1)
            if idx.numel() == 0:
                continue
            idx = idx.to(x.device)
            out[idx] = apply_op(out[idx], op, severity, generator)
    return out


__all__ = ["OPS", "affine", "apply_op", "autocontrast", "equalize", "posterize", "random_chain", "rotate",
           "sample_magnitudes", "shear_x", "shear_y", "solarize", "translate_x", "translate_y"]
