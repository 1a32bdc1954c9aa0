"""Model registry: ``create_model("name", num_classes=..., in_channels=..., input_size=..., mean=..., std=...)``.

Every model is ``nn.Sequential(NormalizeLayer(mean, std), net)``: inputs are pixels in [0, 1]
and normalisation is the first layer (registered buffers, so it follows the model to any
device). The state-dict layout ``0.*`` / ``1.*`` matches Cohen et al.'s reference checkpoints.
Families register themselves with ``@register_model("name")`` (``MODELS.register``), one file
per family; ``MODELS`` is the registry (``MODELS.names()``, ``MODELS.get(name)``).
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from ..registry import Registry
from .normalize import NormalizeLayer

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "arch")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder ``fn(num_classes, in_channels, input_size, **kw) -> nn.Module``."""
    return MODELS.register(name)


def list_models() -> list[str]:
    return MODELS.names()


# the key under which a run's config.json records the normalization layers in model_kwargs (every release's)
RECORDED_NORMALIZATION_KEY = "norm"


def create_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    normalization: str = "bn",
    **kwargs,
) -> nn.Sequential:
    """Build ``NormalizeLayer(mean, std)`` followed by the registered network ``name``.
    ``mean``/``std`` default to 0/1 (no normalisation). ``normalization`` other than "bn" (dubn,
    dubin: AugMax's dual normalisation) converts the network with
    ``models.dubin.apply_normalization``. ``norm=`` is the same setting under the key a run's
    config.json records it (``model_kwargs: {"norm": "dubin"}``), read as ``normalization``."""
    if RECORDED_NORMALIZATION_KEY in kwargs:
        normalization = kwargs.pop(RECORDED_NORMALIZATION_KEY)
    builder = MODELS.get(name)
    net = builder(num_classes=num_classes, in_channels=in_channels, input_size=input_size, **kwargs)
    if normalization != "bn":
        from .dubin import apply_normalization

        net = apply_normalization(net, normalization)
    if getattr(builder, "pixel_space", False):  # image-to-image nets (denoisers, models.denoising): pixels in, no
        mean, std = [0.0], [1.0]  # dataset normalisation -- the identity, broadcast over any number of channels
    mean = [0.0] * in_channels if mean is None else list(mean)
    std = [1.0] * in_channels if std is None else list(std)
    return nn.Sequential(NormalizeLayer(mean, std), net)


from . import cifar_resnet, denoising, lenet, preact_resnet, resnet, wrn  # noqa: E402,F401  (register families)

__all__ = ["MODELS", "NormalizeLayer", "RECORDED_NORMALIZATION_KEY", "create_model", "list_models", "register_model"]
