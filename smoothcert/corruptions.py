"""Common corruptions at severities 1..5 and the corruption-robustness benchmark (Hendrycks &
Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations",
ICLR 2019).

The corruptions work on (B, C, H, W) batches in [0, 1] (grayscale or colour) on any device and
return batches in [0, 1]. Their parameters are those of CIFAR-10-C (the datasets here are at most
32x32): noise (gaussian, shot, impulse, speckle), blur (gaussian, defocus, motion, zoom), digital
(contrast, brightness, pixelate, jpeg_compression); motion blur takes Tiny-ImageNet-C's (see
``_MOTION_BLUR``). Without ImageMagick, motion blur is ImageMagick's one-sided Gaussian line
kernel at a random angle in [-45, 45] degrees, and JPEG is the baseline codec's lossy part done
in torch: JFIF YCbCr, 4:2:0 chroma subsampling (libjpeg's "fancy" upsampling), 8x8 block DCT
and quantisation with the IJG tables scaled to the quality. Pixelate box-filters both ways; on
images under about 20 pixels a side, neighbouring severities can round to the same size.

Random draws (noise, impulse positions, motion angles) come from a CPU ``torch.Generator`` and
are then moved to the images' device, so a seed gives the same corruption on CPU and CUDA.

``evaluate_corruptions`` reports SA (clean accuracy), RA (accuracy averaged over corruptions and
severities), the accuracy per corruption and severity, and, against a baseline result, the
corruption error CE_c = sum_s E_{s,c} / sum_s E_{s,c}^baseline and mCE = mean_c CE_c.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .imageops import affine
from .registry import Registry
from .seeding import derive_seed
from .sampling import model_device
from .validation import check_int

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# CIFAR-10-C parameters (Hendrycks & Dietterich, 2019), one per severity.
_GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)  # std
_SHOT_NOISE = (500, 250, 100, 75, 50)  # photons per unit intensity
_IMPULSE_NOISE = (0.01, 0.02, 0.03, 0.05, 0.07)  # fraction of salt-and-pepper values
_SPECKLE_NOISE = (0.06, 0.10, 0.12, 0.16, 0.20)  # multiplicative std
_GAUSSIAN_BLUR = (0.4, 0.6, 0.7, 0.8, 1.0)  # sigma (pixels)
_DEFOCUS_BLUR = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))  # disk radius, alias-blur sigma
# radius, sigma (pixels) of Tiny-ImageNet-C: CIFAR-10-C's (6,1) (6,1.5) (6,2) (8,2) (9,2.5) make
# severities 3 and 4 the same blur (the radius only truncates a Gaussian tail below 1e-9)
_MOTION_BLUR = ((10, 1.0), (10, 1.5), (10, 2.0), (10, 2.5), (12, 3.0))
_ZOOM_BLUR = (1.05, 1.10, 1.15, 1.20, 1.25)  # largest zoom; zooms 1, 1.01, ..., largest
_CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)  # contrast factor
_BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)  # added to HSV value
_PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)  # downscale factor
_JPEG_QUALITY = (80, 65, 58, 50, 40)


def _randn(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)


def _rand(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)


# -- noise ---------------------------------------------------------------------------------------
def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, c^2), clipped."""
    return (x + _randn(x, generator) * _GAUSSIAN_NOISE[severity - 1]).clamp(0, 1)


def shot_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Poisson(c x) / c, clipped (photon noise). Drawn on the CPU."""
    c = _SHOT_NOISE[severity - 1]
    rate = (x.detach().float().cpu().clamp(0, 1) * c)
    return (torch.poisson(rate, generator=generator) / c).to(device=x.device, dtype=x.dtype).clamp(0, 1)


def impulse_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Salt and pepper: each value becomes 1 with probability c/2 and 0 with probability c/2."""
    c = _IMPULSE_NOISE[severity - 1]
    u = _rand(x, generator)
    return torch.where(u < c / 2, torch.zeros_like(x), torch.where(u < c, torch.ones_like(x), x))


def speckle_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + x * N(0, c^2), clipped."""
    return (x + x * _randn(x, generator) * _SPECKLE_NOISE[severity - 1]).clamp(0, 1)


# -- blur ----------------------------------------------------------------------------------------
def _filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate every channel with ``kernel`` (K, K) or with one kernel per image (B, K, K),
    K odd, replicating the border."""
    B, C, H, W = x.shape
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    k = kernel.shape[-1]
    r = k // 2
    flat = F.pad(x.reshape(1, B * C, H, W), (r, r, r, r), mode="replicate")
    if kernel.dim() == 2:
        weight = kernel.expand(B * C, 1, k, k)
    else:
        weight = kernel.repeat_interleave(C, dim=0).unsqueeze(1)
    return F.conv2d(flat, weight, groups=B * C).view(B, C, H, W)


def _gaussian_1d(sigma: float, radius: int) -> torch.Tensor:
    i = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(i**2) / (2 * sigma**2))
    return (g / g.sum()).float()


def gaussian_blur(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian filter of std c pixels (truncated at 4 sigma)."""
    sigma = _GAUSSIAN_BLUR[severity - 1]
    g = _gaussian_1d(sigma, int(4 * sigma + 0.5))
    return _filter2d(x, torch.outer(g, g)).clamp(0, 1)


def _disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The aliased disk {i^2 + j^2 <= radius^2}, normalised, smoothed by a 3x3 Gaussian of std
    ``alias_blur``, cropped to its support."""
    r = max(8, math.ceil(radius))
    i = torch.arange(-r, r + 1, dtype=torch.float64)
    disk = ((i.view(-1, 1) ** 2 + i.view(1, -1) ** 2) <= radius**2).double()
    disk /= disk.sum()
    g = _gaussian_1d(alias_blur, 1).double()
    k = F.conv2d(disk.view(1, 1, *disk.shape), torch.outer(g, g).view(1, 1, 3, 3), padding=1)[0, 0]
    support = int(math.floor(radius)) + 1
    return k[r - support : r + support + 1, r - support : r + support + 1].float()


def defocus_blur(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Convolution with an anti-aliased disk (a defocused lens)."""
    return _filter2d(x, _disk_kernel(*_DEFOCUS_BLUR[severity - 1])).clamp(0, 1)


def _motion_kernels(angles: torch.Tensor, radius: int, sigma: float) -> torch.Tensor:
    """One (K, K) correlation kernel per angle (degrees), ImageMagick's motion blur: the output
    pixel p averages the input at p + t (cos a, sin a), t = 0..2 radius, with weights
    exp(-t^2 / 2 sigma^2) (normalised; taps below 1e-4 of the first dropped), splatted bilinearly."""
    t = torch.arange(2 * radius + 1, dtype=torch.float64)
    w = torch.exp(-(t**2) / (2 * sigma**2))
    keep = w >= 1e-4
    t, w = t[keep], w[keep] / w[keep].sum()
    reach = int(math.ceil(float(t[-1]))) + 1
    size = 2 * reach + 1
    a = angles.double().view(-1, 1) * (math.pi / 180.0)
    dx, dy = t * torch.cos(a) + reach, t * torch.sin(a) + reach  # kernel cell (reach + d) reads p + d
    kernels = torch.zeros(len(angles), size * size, dtype=torch.float64)
    x0, y0 = dx.floor(), dy.floor()
    for ox in (0, 1):
        for oy in (0, 1):
            wx = (dx - x0) if ox else (1 - (dx - x0))
            wy = (dy - y0) if oy else (1 - (dy - y0))
            idx = ((y0 + oy).clamp(0, size - 1) * size + (x0 + ox).clamp(0, size - 1)).long()
            kernels.scatter_add_(1, idx, wx * wy * w)
    return kernels.view(-1, size, size).float()


def motion_blur(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One-sided Gaussian line blur at a random angle in [-45, 45] degrees, one per image."""
    radius, sigma = _MOTION_BLUR[severity - 1]
    angles = torch.rand(x.shape[0], generator=generator) * 90 - 45
    return _filter2d(x, _motion_kernels(angles, radius, sigma)).clamp(0, 1)


def zoom_blur(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean of x and its central zooms by 1, 1.01, ..., c (bilinear)."""
    steps = int(round((_ZOOM_BLUR[severity - 1] - 1) / 0.01))
    out = x.clone()
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=x.device)
    for s in range(steps + 1):
        m = (eye / (1 + 0.01 * s)).repeat(x.shape[0], 1, 1)
        out = out + affine(x, m)
    return (out / (steps + 2)).clamp(0, 1)


# -- digital ---------------------------------------------------------------------------------------
def contrast(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(x - mean) * c + mean with the per-image, per-channel mean."""
    c = _CONTRAST[severity - 1]
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * c + mean).clamp(0, 1)


def brightness(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """HSV value + c, clipped (hue and saturation kept): colour pixels are scaled by V'/V;
    grayscale images get x + c."""
    c = _BRIGHTNESS[severity - 1]
    if x.shape[1] == 1:
        return (x + c).clamp(0, 1)
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * (v_new / v.clamp(min=1e-12)), v_new.expand_as(x)).clamp(0, 1)


def _box_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """Box resampling of a length-n_in signal to n_out samples: output pixel i averages the input
    over [i n_in / n_out, (i + 1) n_in / n_out), each input pixel weighted by its overlap."""
    edges = torch.arange(n_out + 1, dtype=torch.float64) * (n_in / n_out)
    j = torch.arange(n_in, dtype=torch.float64)
    overlap = (torch.minimum(edges[1:, None], j[None] + 1) - torch.maximum(edges[:-1, None], j[None])).clamp(min=0)
    return overlap / overlap.sum(1, keepdim=True)


def pixelate(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Box-downscale to floor(c * side) pixels and box-upscale back (area-weighted both ways)."""
    c = _PIXELATE[severity - 1]
    H, W = x.shape[2:]
    h, w = max(1, int(H * c)), max(1, int(W * c))
    rows = (_box_matrix(H, h) @ _box_matrix(h, H)).to(device=x.device, dtype=x.dtype)
    cols = (_box_matrix(W, w) @ _box_matrix(w, W)).to(device=x.device, dtype=x.dtype)
    return (rows @ x @ cols.T).clamp(0, 1)


# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance)
_JPEG_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
              14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
              49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_JPEG_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
                47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32


def _jpeg_table(base: list[int], quality: int) -> torch.Tensor:
    """IJG quality scaling: s = 5000 / q (q < 50) or 200 - 2 q; entries floor((T s + 50) / 100) in [1, 255]."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    t = torch.tensor(base, dtype=torch.float64)
    return torch.floor((t * scale + 50) / 100).clamp(1, 255).view(8, 8)


def _dct_matrix() -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix D (rows: frequencies): coefficients = D X D^T."""
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n.view(1, -1) + 1) * n.view(-1, 1) * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


def _jpeg_plane(p: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Quantise one (B, H, W) plane of levels 0..255 blockwise in the DCT domain."""
    B, H, W = p.shape
    ph, pw = -H % 8, -W % 8
    q = F.pad(p.unsqueeze(1), (0, pw, 0, ph), mode="replicate").squeeze(1) - 128
    Hp, Wp = q.shape[1:]
    blocks = q.view(B, Hp // 8, 8, Wp // 8, 8).permute(0, 1, 3, 2, 4)
    d = _dct_matrix().to(device=p.device, dtype=p.dtype)
    t = table.to(device=p.device, dtype=p.dtype)
    coef = d @ blocks @ d.T
    rec = d.T @ (torch.round(coef / t) * t) @ d
    out = rec.permute(0, 1, 3, 2, 4).reshape(B, Hp, Wp) + 128
    return out[:, :H, :W].round().clamp(0, 255)


def jpeg_compression(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Baseline JPEG at quality c (lossy steps only: the entropy coding is lossless)."""
    quality = _JPEG_QUALITY[severity - 1]
    luma, chroma = _jpeg_table(_JPEG_LUMA, quality), _jpeg_table(_JPEG_CHROMA, quality)
    v = (x.double() * 255).round().clamp(0, 255)
    if x.shape[1] == 1:
        return (_jpeg_plane(v[:, 0], luma).unsqueeze(1) / 255).to(x.dtype)
    if x.shape[1] != 3:
        raise ValueError(f"jpeg_compression needs 1 or 3 channels, got {x.shape[1]}")
    r, g, b = v[:, 0], v[:, 1], v[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    H, W = x.shape[2:]
    y = _jpeg_plane(y.round().clamp(0, 255), luma)
    chans = []
    for c in (cb, cr):  # 4:2:0: average 2x2, code at half resolution, upsample as libjpeg's "fancy" filter
        c = F.pad(c.unsqueeze(1), (0, W % 2, 0, H % 2), mode="replicate")
        small = F.avg_pool2d(c, 2).squeeze(1).round().clamp(0, 255)
        coded = _jpeg_plane(small, chroma).unsqueeze(1)
        up = F.interpolate(coded, scale_factor=2, mode="bilinear", align_corners=False)  # 9/16, 3/16, 3/16, 1/16
        chans.append(up[:, 0, :H, :W])
    cb, cr = chans
    out = torch.stack([y + 1.402 * (cr - 128),
                       y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                       y + 1.772 * (cb - 128)], dim=1)
    return (out.round().clamp(0, 255) / 255).to(x.dtype)


# name -> corruption(x, severity, generator), in the one Registry, in the benchmark's order (the
# order of ``list_corruptions``, of "all" and of a result's entries)
CORRUPTIONS: Registry[Callable[[torch.Tensor, int, torch.Generator | None], torch.Tensor]] = Registry(
    "corruption", "corruptions", ordered=True)
for _fn in (gaussian_noise, shot_noise, impulse_noise, speckle_noise, gaussian_blur, defocus_blur, motion_blur,
            zoom_blur, contrast, brightness, pixelate, jpeg_compression):
    CORRUPTIONS.add(_fn.__name__, _fn)
del _fn


def list_corruptions() -> list[str]:
    return list(CORRUPTIONS)


def check_corruptions(names: Iterable[str]) -> list[str]:
    """The names, checked; ValueError naming an unknown corruption."""
    names = list(names)
    if not names:
        raise ValueError("corruptions must name at least one corruption")
    for n in names:
        if n not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {n!r}; choose from {', '.join(CORRUPTIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"corruptions must not repeat a name, got {', '.join(names)}")
    return names


def check_severities(severities: Iterable[int]) -> list[int]:
    """The severities, checked; ValueError unless each is an integer in 1..5, none repeated."""
    sevs = list(severities)
    if not sevs:
        raise ValueError("severities must hold at least one severity")
    for s in sevs:
        if isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITIES:
            raise ValueError(f"severity must be an integer in 1..5, got {s!r}")
    if len(set(sevs)) != len(sevs):
        raise ValueError(f"severities must not repeat, got {sevs}")
    return sevs


def parse_corruptions(spec: str) -> list[str]:
    """'all' or comma-separated names -> checked list."""
    if spec.strip() == "all":
        return list_corruptions()
    return check_corruptions(s.strip() for s in spec.split(",") if s.strip())


def parse_severities(spec: str) -> list[int]:
    """'1,2,3' -> checked list of severities."""
    out = []
    for s in spec.split(","):
        s = s.strip()
        try:
            out.append(int(s))
        except ValueError:
            raise ValueError(f"severity must be an integer in 1..5, got {s!r}") from None
    return check_severities(out)


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Corruption ``name`` at ``severity`` (1..5) of a (B, C, H, W) batch in [0, 1]."""
    check_corruptions([name])
    check_severities([severity])
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError("x must be a (B, C, H, W) tensor")
    with torch.no_grad():
        return CORRUPTIONS.get(name)(x, severity, generator)


def corruption_seed(seed: int, name: str, severity: int) -> int:
    """The generator seed of one (corruption, severity): independent of which others are run
    (``seeding.derive_seed``, the one seeding rule: a hash of seed, name and severity)."""
    return derive_seed(seed, name, int(severity))


# -- the benchmark ---------------------------------------------------------------------------------
def load_result(path: str | os.PathLike) -> dict[str, Any]:
    """A result written by ``evaluate_corruptions`` (e.g. ``smoothcert evaluate --out``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"baseline result {str(path)!r} does not exist")
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"baseline result {str(path)!r} is not valid JSON: {str(e)[:80]}") from None
    if not isinstance(result, dict) or not isinstance(result.get("accuracy"), dict):
        raise ValueError(f"{str(path)!r} is not a corruption result written by smoothcert evaluate")
    return result


def baseline_errors(baseline: dict[str, Any], corruptions: Sequence[str], severities: Sequence[int]) -> dict[str, float]:
    """sum_s E^baseline_{s,c} for each corruption c; ValueError if the baseline lacks a (c, s) or
    makes no error on some c (its CE would be undefined)."""
    base = baseline.get("accuracy", {})
    errors = {}
    for c in corruptions:
        total = 0.0
        for s in severities:
            try:
                total += 1.0 - float(base[c][str(s)])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"baseline has no accuracy for {c} at severity {s}") from None
        if total <= 0:
            raise ValueError(f"baseline makes no error on {c}: its corruption error is undefined")
        errors[c] = total
    return errors


def evaluate_corruptions(model: nn.Module, dataset: Dataset, corruptions: Sequence[str] | str = "all",
                         severities: Sequence[int] = SEVERITIES, batch_size: int = 256, seed: int = 0,
                         baseline: dict[str, Any] | str | os.PathLike | None = None, *,
                         max_images: int | None = None, device: torch.device | str | None = None,
                         progress: bool = False) -> dict[str, Any]:
    """Accuracy of ``model`` (eval mode, its DuBN layers on their default, clean route) on the
    first ``max_images`` images of ``dataset``, clean and under each corruption and severity.

    Returns a JSON-ready dict: ``SA``, ``RA`` (mean over corruptions and severities),
    ``accuracy[c][str(s)]``, ``corruption_accuracy[c]`` (mean over severities), and with a
    ``baseline`` (a result dict or its JSON file) ``CE[c]`` and ``mCE``. The corruption of
    (c, s) draws from a generator seeded by (seed, c, s), in dataset order: reruns with the same
    seed and batch size are identical.
    """
    corruptions = list_corruptions() if corruptions == "all" else check_corruptions(corruptions)
    severities = check_severities(severities)
    batch_size = check_int("batch_size", batch_size, 1)
    if max_images is not None:
        max_images = check_int("max_images", max_images, 1)
    if baseline is not None and not isinstance(baseline, dict):
        baseline = load_result(baseline)
    base_errors = None
    if baseline is not None:
        base_ds = baseline.get("dataset")
        if base_ds is not None and getattr(dataset, "name", None) and base_ds != dataset.name:
            raise ValueError(f"baseline was evaluated on {base_ds!r}, not on {dataset.name!r}")
        base_errors = baseline_errors(baseline, corruptions, severities)
    device = model_device(model) if device is None else torch.device(device)
    n = len(dataset) if max_images is None else min(max_images, len(dataset))  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("dataset is empty")
    loader = DataLoader(Subset(dataset, range(n)), batch_size=batch_size, shuffle=False)
    pairs = [(c, s) for c in corruptions for s in severities]
    gens = {p: torch.Generator().manual_seed(corruption_seed(seed, *p)) for p in pairs}
    clean_correct = torch.zeros((), dtype=torch.long, device=device)
    correct = torch.zeros(len(pairs), dtype=torch.long, device=device)

    from tqdm.auto import tqdm

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=n * (1 + len(pairs)), disable=not progress, unit="img",
                                          desc="corruptions") as bar:
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                clean_correct += (model(x).argmax(1) == y).sum()
                bar.update(len(y))
                for k, (c, s) in enumerate(pairs):
                    xc = CORRUPTIONS.get(c)(x, s, gens[(c, s)])
                    correct[k] += (model(xc).argmax(1) == y).sum()
                    bar.update(len(y))
    finally:
        for m, training in modes:
            m.training = training
    acc = (correct.double() / n).tolist()
    accuracy = {c: {} for c in corruptions}
    for (c, s), a in zip(pairs, acc):
        accuracy[c][str(s)] = a
    result: dict[str, Any] = {
        "SA": clean_correct.item() / n,
        "RA": sum(acc) / len(acc),
        "accuracy": accuracy,
        "corruption_accuracy": {c: sum(accuracy[c].values()) / len(severities) for c in corruptions},
        "corruptions": corruptions, "severities": severities, "num_images": n, "seed": seed,
        "batch_size": batch_size, "dataset": getattr(dataset, "name", None), "CE": None, "mCE": None,
    }
    if base_errors is not None:
        ce = {c: sum(1.0 - a for a in accuracy[c].values()) / base_errors[c] for c in corruptions}
        result["CE"], result["mCE"] = ce, sum(ce.values()) / len(ce)
    return result


__all__ = ["CORRUPTIONS", "SEVERITIES", "check_corruptions", "check_severities", "corrupt", "baseline_errors",
           "corruption_seed", "evaluate_corruptions", "list_corruptions", "load_result", "parse_corruptions",
           "parse_severities"]
