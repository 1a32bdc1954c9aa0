"""Image-to-image networks as models, so that the one Trainer trains them (``--arch``):
the denoisers ``dncnn`` and ``unet`` (``smoothcert.denoisers.nets``) and the DDPM network
``ddpm_unet`` (``smoothcert.denoisers.diffusion.EpsUNet``).

Their builders carry ``pixel_space = True``: ``create_model`` then puts no dataset
normalisation in front (an identity ``NormalizeLayer``), since they map [0, 1] pixels to pixels
(the DDPM network: [-1, 1] images to noise). ``num_classes`` and ``input_size`` are not used.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..denoisers.diffusion import EpsUNet
from ..denoisers.nets import DnCNN, UNet
from . import register_model


def _pixel_model(name: str, cls: type[nn.Module]) -> Callable[..., nn.Module]:
    def build(num_classes: int = 10, in_channels: int = 1, input_size: int = 28, **kwargs: Any) -> nn.Module:
        return cls(in_channels=in_channels, **kwargs)

    build.__name__ = name
    build.__doc__ = f"{cls.__name__} (pixels in, pixels out): {(cls.__doc__ or '').splitlines()[0]}"
    build.pixel_space = True  # type: ignore[attr-defined]
    return register_model(name)(build)


dncnn = _pixel_model("dncnn", DnCNN)
unet = _pixel_model("unet", UNet)
ddpm_unet = _pixel_model("ddpm_unet", EpsUNet)

__all__ = ["ddpm_unet", "dncnn", "unet"]
