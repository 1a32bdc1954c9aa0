"""Learned image denoisers: DnCNN (Zhang et al., 2017) and a small U-Net.

Both map a noisy image in [0, 1] pixel space to an image of the same shape, residually: they
predict the noise and return ``x - predicted noise`` (Zhang et al.'s residual learning). They
work on pixels directly, as in Salman et al.'s denoised smoothing code: no dataset normalisation
in front (the classifier behind a denoiser keeps its own normalisation layer).

Sizes are chosen for certifying on a CPU: every noisy sample of a certificate goes through the
denoiser, so the denoiser's cost, not the classifier's, sets the speed of the pipeline.
"""
from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..validation import check_int


class DnCNN(nn.Module):
    """DnCNN (Zhang, Zuo, Chen, Meng & Zhang, "Beyond a Gaussian Denoiser", IEEE TIP 2017):
    conv+ReLU, (depth - 2) x conv+BN+ReLU, conv, all 3x3 with ``width`` channels; the network
    predicts the noise and the output is ``x - net(x)``. The paper's (and Salman et al.'s) size is
    depth 17, width 64 (556,096 parameters on one channel); the default here, depth 8 and width 32,
    has 56,288 parameters on one channel (28x28 MNIST: 44 M multiply-adds per image, 19 times
    LeNet's 2.3 M). Layout as Salman et al.'s ``DnCNN`` (bias in the first conv only; BN eps
    1e-4, PyTorch's default momentum)."""

    def __init__(self, in_channels: int = 1, depth: int = 8, width: int = 32):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.depth = check_int("depth", depth, 2)
        self.width = check_int("width", width, 1)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width, eps=1e-4),
                       nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, in_channels, 3, padding=1, bias=False))
        self.dncnn = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.dncnn(x)


def _block(cin: int, cout: int) -> nn.Sequential:
    """Two conv3x3 + BN + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def match_size(up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``up`` zero-padded (bottom/right) or cropped to ``skip``'s height and width: odd sides
    (7 -> 3 -> 6) meet their skip connection again. A leaf for torch.fx (``fx.wrap``), so that
    models holding a U-Net stay traceable for BatchNorm folding."""
    dh, dw = skip.shape[-2] - up.shape[-2], skip.shape[-1] - up.shape[-1]
    if dh or dw:
        up = F.pad(up, (0, dw, 0, dh))
    return up


torch.fx.wrap("match_size")


class UNet(nn.Module):
    """A small U-Net (Ronneberger et al., 2015) denoiser: two down and two up levels with skip
    connections, ``width``, 2 ``width`` and 4 ``width`` channels at full, half and quarter
    resolution (two conv3x3+BN+ReLU per level, 2x2 max pooling down, 2x2 transposed convs up);
    residual like DnCNN (``x - net(x)``). Width 16 (the default): 117,073 parameters on one
    channel, about 19 M multiply-adds per 28x28 image (less than the default DnCNN: most of its
    work is at lower resolution)."""

    def __init__(self, in_channels: int = 1, width: int = 16):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.width = w = check_int("width", width, 1)
        self.enc0 = _block(in_channels, w)
        self.enc1 = _block(w, 2 * w)
        self.mid = _block(2 * w, 4 * w)
        self.up1 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec1 = _block(4 * w, 2 * w)
        self.up0 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec0 = _block(2 * w, w)
        self.out = nn.Conv2d(w, in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = self.enc0(x)
        e1 = self.enc1(F.max_pool2d(e0, 2))
        m = self.mid(F.max_pool2d(e1, 2))
        d1 = self.dec1(torch.cat([match_size(self.up1(m), e1), e1], 1))
        d0 = self.dec0(torch.cat([match_size(self.up0(d1), e0), e0], 1))
        return x - self.out(d0)


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["DnCNN", "UNet", "match_size", "num_parameters"]
