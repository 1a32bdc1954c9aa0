"""One-shot diffusion denoising (Carlini, Tramer, Dvijotham, Rice, Sun & Kolter, "(Certified!!)
Adversarial Robustness for Free!", ICLR 2023) for any noise-prediction (epsilon) model, and the
small DDPM the toolkit trains itself.

**The pixel-range conversion.** smoothcert's pixels are in [0, 1] and the smoothing noise d has
per-coordinate std sigma in that scale. Diffusion models are trained on images in [-1, 1]:
x0 = 2 x - 1, and the forward process at step t is

    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,        eps ~ N(0, I).

Mapped to [-1, 1], our noisy input is 2 (x + d) - 1 = x0 + 2 d: the model sees noise of std
**2 sigma**, not sigma (the factor users of the original code trip on). Scaling by sqrt(abar_t)
gives sqrt(abar_t) x0 + sqrt(abar_t) 2 sigma eps, which is distributed exactly as x_t when
sqrt(abar_t) 2 sigma = sqrt(1 - abar_t), i.e. when

    sqrt((1 - abar_t) / abar_t) = 2 sigma.

So ``match_timestep`` picks the t whose noise level sqrt((1 - abar_t) / abar_t) is closest to
2 sigma (Carlini et al.'s code takes the first t at or above it: at most one step away), and
``OneShotDenoiser`` computes

    x_t = sqrt(abar_t) (2 (x + d) - 1)
    x0_hat = (x_t - sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(abar_t)      (one step, no sampling)
    output = clip((x0_hat + 1) / 2, 0, 1)                                   (back to [0, 1] pixels)

The match assumes Gaussian smoothing noise (what the diffusion model was trained on); Laplace or
uniform noise at the same per-coordinate std can be certified through it, but the model then
sees noise of another shape.

**Epsilon models.** Anything ``eps_model(x_t, t) -> eps`` with ``t`` a (B,) long tensor:
``diffusers_denoiser`` wraps a diffusers ``UNet2DModel`` with its scheduler's ``alphas_cumprod``
(diffusers is optional: imported only there); ``EpsUNet`` is the toolkit's own small DDPM network,
trained by the ``ddpm`` training method (``smoothcert.methods.ddpm``) with the standard DDPM loss
(Ho, Jain & Abbeel, NeurIPS 2020) ``ddpm_loss`` on the linear schedule ``linear_schedule``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..validation import ArgumentError, check_float, check_int, check_sigma
from .nets import match_size

torch.fx.wrap("match_size")  # a leaf here too (fx patches the name in each module that calls it)


# -- the schedule and the timestep matching -------------------------------------------------------
def linear_schedule(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """abar_t = prod_{s <= t} (1 - beta_s) for betas linear from ``beta_start`` to ``beta_end``
    over ``num_steps`` steps (Ho et al.'s schedule: 1000 steps, 1e-4 to 0.02), float64, t = 0 ..
    num_steps - 1."""
    num_steps = check_int("num_steps", num_steps, 1)
    beta_start = check_float("beta_start", beta_start, 0.0, 1.0, lo_open=True, hi_open=True)
    beta_end = check_float("beta_end", beta_end, beta_start, 1.0, hi_open=True)
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


def _check_schedule(alphas_cumprod: Any) -> torch.Tensor:
    a = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu().reshape(-1)
    if a.numel() == 0 or not torch.all((a > 0) & (a <= 1)):
        raise ArgumentError("alphas_cumprod", "alphas_cumprod must be a non-empty sequence of numbers in (0, 1]")
    return a


def noise_levels(alphas_cumprod: Any) -> torch.Tensor:
    """sqrt((1 - abar_t) / abar_t) for every t: the std of the noise in x_t / sqrt(abar_t), in the
    model's [-1, 1] scale."""
    a = _check_schedule(alphas_cumprod)
    return torch.sqrt((1.0 - a) / a)


def match_timestep(alphas_cumprod: Any, sigma: float) -> int:
    """The t whose noise level sqrt((1 - abar_t) / abar_t) is closest to 2 sigma (``sigma`` in
    [0, 1] pixel units; the model's [-1, 1] range doubles it: module doc). The smallest such t
    on a tie."""
    sigma = check_sigma(sigma)
    return int(torch.argmin(torch.abs(noise_levels(alphas_cumprod) - 2.0 * sigma)))


# -- one-shot denoising ---------------------------------------------------------------------------
class OneShotDenoiser(nn.Module):
    """Denoiser of [0, 1] images carrying N(0, sigma^2 I) noise by one step of a diffusion
    model's epsilon prediction (module doc for the formulas and the 2 sigma conversion).

    ``eps_model(x_t, t)`` predicts the noise of x_t (B, C, H, W) at timesteps t (B,) long;
    ``alphas_cumprod`` its schedule (abar_0 .. abar_{T-1}); ``sigma`` the smoothing noise level
    in pixel units; ``t`` overrides the matched timestep (``match_timestep``); ``clip`` clips
    the estimate to [0, 1]. The timestep is fixed at construction: certify at the sigma it was
    built for."""

    def __init__(self, eps_model: nn.Module, alphas_cumprod: Any, sigma: float, t: int | None = None,
                 clip: bool = True):
        super().__init__()
        a = _check_schedule(alphas_cumprod)
        self.sigma = check_sigma(sigma)
        if t is None:
            t = match_timestep(a, self.sigma)
        self.timestep = check_int("t", t, 0)
        if self.timestep >= a.numel():
            raise ArgumentError("t", f"t must be < {a.numel()} (the schedule's length), got {t}")
        self.eps_model = eps_model
        self.training = eps_model.training  # the wrapper's mode is the model's
        self.clip = bool(clip)
        abar = float(a[self.timestep])
        self.register_buffer("t", torch.tensor(self.timestep, dtype=torch.long), persistent=False)
        self.register_buffer("sqrt_abar", torch.tensor(math.sqrt(abar), dtype=torch.float32), persistent=False)
        self.register_buffer("sqrt_one_minus_abar", torch.tensor(math.sqrt(1.0 - abar), dtype=torch.float32),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_t = self.sqrt_abar * (2.0 * x - 1.0)
        eps = self.eps_model(x_t, self.t.expand(x.shape[0]))
        x0 = (x_t - self.sqrt_one_minus_abar * eps) / self.sqrt_abar
        out = (x0 + 1.0) / 2.0
        return out.clamp(0.0, 1.0) if self.clip else out

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}, t={self.timestep}, clip={self.clip}"


# -- diffusers (optional) ---------------------------------------------------------------------------
class DiffusersEps(nn.Module):
    """``eps(x_t, t)`` of a diffusers ``UNet2DModel`` (its ``.sample``); a model that also
    predicts the variance (out_channels = 2 in_channels, as guided diffusion's) gives its first
    in_channels channels."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        self.training = unet.training
        cfg = getattr(unet, "config", None)
        cin, cout = getattr(cfg, "in_channels", None), getattr(cfg, "out_channels", None)
        self.channels = cin if cin is not None and cout == 2 * cin else None

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.unet(x_t, t)
        out = getattr(out, "sample", out)
        return out if self.channels is None else out[:, : self.channels]


def diffusers_denoiser(unet: nn.Module, scheduler: Any, sigma: float, t: int | None = None) -> OneShotDenoiser:
    """One-shot denoiser from a diffusers ``UNet2DModel`` (epsilon prediction, trained on [-1, 1]
    images) and its scheduler (``DDPMScheduler`` or any with ``alphas_cumprod``)."""
    pred = getattr(getattr(scheduler, "config", None), "prediction_type", "epsilon")
    if pred != "epsilon":
        raise ArgumentError("denoiser", f"denoiser: the scheduler's prediction_type is {pred!r}; one-shot "
                                        "denoising here needs an epsilon-prediction model")
    return OneShotDenoiser(DiffusersEps(unet), scheduler.alphas_cumprod, sigma, t)


def load_diffusers(path: str, sigma: float, t: int | None = None) -> OneShotDenoiser:
    """A one-shot denoiser from a diffusers pipeline folder (``unet/`` and ``scheduler/``
    subfolders, as ``DDPMPipeline.save_pretrained`` writes) or a folder holding a
    ``UNet2DModel`` with a ``scheduler_config.json`` beside it. Needs diffusers (optional)."""
    try:
        from diffusers import DDPMScheduler, UNet2DModel
    except ImportError:
        raise ArgumentError("denoiser", "denoiser: a diffusers model needs the diffusers package "
                                        "(pip install diffusers)") from None
    from pathlib import Path

    root = Path(path)
    sub = root / "unet"
    unet_dir, sched_dir = (sub, root / "scheduler") if sub.is_dir() else (root, root)
    unet = UNet2DModel.from_pretrained(str(unet_dir))
    scheduler = DDPMScheduler.from_pretrained(str(sched_dir))
    return diffusers_denoiser(unet.eval(), scheduler, sigma, t)


def is_diffusers_folder(path: Any) -> bool:
    """True for a folder that ``load_diffusers`` reads."""
    from pathlib import Path

    p = Path(path)
    return (p / "unet" / "config.json").is_file() or (
        (p / "config.json").is_file() and (p / "scheduler_config.json").is_file())


# -- the toolkit's small DDPM ----------------------------------------------------------------------
def with_timestep(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B, C + 1, H, W): ``x_t`` and one more channel filled with the timestep t (float), the
    input ``EpsUNet`` takes (the registry's models take one tensor)."""
    tmap = t.to(x_t.dtype).view(-1, 1, 1, 1).expand(x_t.shape[0], 1, x_t.shape[2], x_t.shape[3])
    return torch.cat([x_t, tmap], 1)


class PackedEps(nn.Module):
    """``eps(x_t, t) = model(with_timestep(x_t, t))`` for a model built by the registry around
    an ``EpsUNet`` (``create_model("ddpm_unet", ...)``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.training = model.training

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(with_timestep(x_t, t))


def _groups(c: int) -> int:
    return next(g for g in (8, 4, 2, 1) if c % g == 0)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class EpsUNet(nn.Module):
    """A tiny epsilon-prediction U-Net for DDPM (Ho et al., 2020) on small images: a sinusoidal
    timestep embedding (Vaswani et al.) through a two-layer MLP, added in every residual block
    (GroupNorm, SiLU, conv3x3); ``width``, 2 ``width``, 2 ``width`` channels at full, half and
    quarter resolution, skip connections between the levels.

    Its input is (B, C + 1, H, W): the noisy image x_t in the model's [-1, 1] scale and a last
    channel holding the timestep t (``with_timestep``; ``PackedEps`` gives the usual
    ``eps(x_t, t)``), so that the registry's one-input ``nn.Sequential`` can hold it. Width 32
    (the default) on one channel: 455,809 parameters, about 102 M multiply-adds per 28x28
    image (44 times LeNet's 2.3 M)."""

    def __init__(self, in_channels: int = 1, width: int = 32):
        super().__init__()
        self.in_channels = c = check_int("in_channels", in_channels, 1)
        self.width = w = check_int("width", width, 2)
        temb = 4 * w
        half = w // 2
        self.register_buffer("freqs", torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / half),
                             persistent=False)
        self.embed = nn.Sequential(nn.Linear(2 * half, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.conv_in = nn.Conv2d(c, w, 3, padding=1)
        self.enc0 = _ResBlock(w, w, temb)
        self.down0 = nn.Conv2d(w, w, 3, stride=2, padding=1)
        self.enc1 = _ResBlock(w, 2 * w, temb)
        self.down1 = nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1)
        self.mid = _ResBlock(2 * w, 2 * w, temb)
        self.upsample = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.up1 = nn.Conv2d(2 * w, 2 * w, 3, padding=1)
        self.dec1 = _ResBlock(4 * w, 2 * w, temb)
        self.up0 = nn.Conv2d(2 * w, w, 3, padding=1)
        self.dec0 = _ResBlock(2 * w, w, temb)
        self.norm_out = nn.GroupNorm(_groups(w), w)
        self.conv_out = nn.Conv2d(w, c, 3, padding=1)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = inp[:, : self.in_channels]
        t = inp[:, self.in_channels :].mean(dim=(1, 2, 3))  # the constant timestep channel
        ang = t[:, None] * self.freqs[None, :]
        emb = self.embed(torch.cat([torch.sin(ang), torch.cos(ang)], 1))
        h0 = self.enc0(self.conv_in(x), emb)
        h1 = self.enc1(self.down0(h0), emb)
        m = self.mid(self.down1(h1), emb)
        u1 = match_size(self.up1(self.upsample(m)), h1)
        d1 = self.dec1(torch.cat([u1, h1], 1), emb)
        u0 = match_size(self.up0(self.upsample(d1)), h0)
        d0 = self.dec0(torch.cat([u0, h0], 1), emb)
        return self.conv_out(F.silu(self.norm_out(d0)))


def ddpm_loss(eps_model: Any, x: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor | None = None,
              eps: torch.Tensor | None = None) -> torch.Tensor:
    """The DDPM loss (Ho et al., 2020, Eq. 14) on a batch ``x`` of [0, 1] images:
    mean ||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t)||^2 with x0 = 2 x - 1,
    t ~ U{0, ..., T - 1} and eps ~ N(0, I) (drawn unless given; ``alphas_cumprod`` on x's
    device). The mean is over all elements."""
    T = alphas_cumprod.shape[0]
    if t is None:
        t = torch.randint(0, T, (x.shape[0],), device=x.device)
    if eps is None:
        eps = torch.randn_like(x)
    a = alphas_cumprod.to(device=x.device, dtype=x.dtype)[t].view(-1, *([1] * (x.dim() - 1)))
    x_t = a.sqrt() * (2.0 * x - 1.0) + (1.0 - a).sqrt() * eps
    return F.mse_loss(eps_model(x_t, t), eps)


__all__ = ["DiffusersEps", "EpsUNet", "OneShotDenoiser", "PackedEps", "ddpm_loss", "diffusers_denoiser",
           "is_diffusers_folder", "linear_schedule", "load_diffusers", "match_timestep", "noise_levels",
           "with_timestep"]
