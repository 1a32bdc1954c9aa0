"""Denoised smoothing: certify a classifier that was never trained on noise.

* ``Denoised(denoiser, classifier)`` (``compose``): classifier(denoiser(x)), an ordinary model
  to ``Smooth`` (Salman et al., NeurIPS 2020).
* Learned denoisers (``nets``), in the ``DENOISERS`` registry (``create_denoiser(name,
  in_channels, **kw)``): ``dncnn`` (Zhang et al., 2017) and ``unet``. They are registered as
  models too (``--arch dncnn``, ``--arch unet``; ``smoothcert.models.denoising``), so that the
  ``denoiser`` training method (``smoothcert.methods.denoiser``: Salman et al.'s MSE and
  stability objectives, the classifier frozen, optionally through a surrogate) trains them with
  the one Trainer.
* One-shot diffusion denoising (``diffusion``, Carlini et al., ICLR 2023): ``OneShotDenoiser``
  for any epsilon model and its alpha-bar schedule, the timestep matched to sigma (the [0, 1] ->
  [-1, 1] conversion is spelled out there); diffusers ``UNet2DModel`` support when diffusers is
  installed; the toolkit's own small DDPM (``EpsUNet``, arch ``ddpm_unet``, trained by the
  ``ddpm`` method).
* Loading (``loading``): ``load_denoiser(run)``, ``through_denoiser(classifier, ...)``; a
  ``denoiser`` run loads (``smoothcert.load_model``) as the composition with its classifier.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..registry import Registry
from .compose import Denoised
from .diffusion import (EpsUNet, OneShotDenoiser, PackedEps, ddpm_loss, diffusers_denoiser, linear_schedule,
                        match_timestep, noise_levels)
from .nets import DnCNN, UNet, num_parameters

DENOISERS: Registry[Callable[..., nn.Module]] = Registry("denoiser", "denoiser")
DENOISERS.add("dncnn", DnCNN)
DENOISERS.add("unet", UNet)


def create_denoiser(name: str, in_channels: int = 1, **kwargs) -> nn.Module:
    """The registered denoiser ``name`` for images of ``in_channels`` channels (``kwargs``: its
    size, e.g. depth/width); ArgumentError("denoiser") listing the choices for an unknown name."""
    return DENOISERS.get(name)(in_channels=in_channels, **kwargs)


__all__ = ["DENOISERS", "Denoised", "DnCNN", "EpsUNet", "OneShotDenoiser", "PackedEps", "UNet", "create_denoiser",
           "ddpm_loss", "diffusers_denoiser", "linear_schedule", "match_timestep", "noise_levels", "num_parameters"]
