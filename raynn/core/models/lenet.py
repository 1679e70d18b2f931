"""LeNet-5 style convolutional network for small images."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _validate(in_shape: tuple[int, int, int], num_classes: int) -> tuple[int, int, int]:
    """Validate an input shape / class count pair and return the shape as ints."""
    if len(in_shape) != 3:
        raise ValueError(f"in_shape must be (channels, height, width), got {in_shape!r}")
    c, h, w = (int(v) for v in in_shape)
    if c < 1 or h < 1 or w < 1:
        raise ValueError(f"in_shape entries must be positive, got {in_shape!r}")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return c, h, w


class LeNet(nn.Module):
    """LeNet-5: two conv/pool stages followed by three fully connected layers.

    Args:
        in_shape: Input shape ``(channels, height, width)``.
        num_classes: Number of output logits.
    """

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = _validate(in_shape, num_classes)
        layers: list[nn.Module] = []
        in_ch = c
        for out_ch in (6, 16):
            # padding=2 with a 5x5 kernel preserves the spatial size.
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=5, padding=2), nn.ReLU(inplace=True)]
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_ch * h * w, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, int(num_classes)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(N, num_classes)``."""
        return self.classifier(self.features(x))


def lenet(in_shape: tuple[int, int, int], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a LeNet-5 model.

    Args:
        in_shape: Input shape ``(channels, height, width)``.
        num_classes: Number of output classes (>= 2).
        **kwargs: Ignored; accepted for a uniform factory signature.

    Returns:
        The model.
    """
    del kwargs
    return LeNet(in_shape, num_classes)
