"""Small convolutional nets: LeNet (the MNIST model of the randomized-smoothing literature) and a
small CNN for scikit-learn's 8x8 digits."""
from __future__ import annotations

from torch import nn

from . import register_model


@register_model("lenet")
def lenet(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> nn.Module:
    """conv 20@5x5 - maxpool 2 - conv 50@5x5 - maxpool 2 - fc 500 - fc num_classes (ReLU)."""
    side = ((input_size - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"lenet needs input_size >= 16, got {input_size}")
    return nn.Sequential(
        nn.Conv2d(in_channels, 20, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(50 * side * side, 500), nn.ReLU(inplace=True),
        nn.Linear(500, num_classes),
    )


@register_model("digits_cnn")
def digits_cnn(num_classes: int = 10, in_channels: int = 1, input_size: int = 8) -> nn.Module:
    """conv 32@3x3 - conv 64@3x3 - maxpool 2 - fc 128 - fc num_classes: for 8x8 digits."""
    side = input_size // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(inplace=True),
        nn.Linear(128, num_classes),
    )
