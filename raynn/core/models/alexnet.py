"""Small-input AlexNet variant."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class AlexNet(nn.Module):
    """AlexNet adapted to small images (3x3/5x5 kernels, stride 1, adaptive pooling).

    Max-pools are skipped when the spatial size would drop below 1.

    Args:
        in_shape: Input shape ``(channels, height, width)``.
        num_classes: Number of output logits.
        hidden: Width of the two hidden fully connected layers.
        dropout: Dropout probability in the classifier.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        hidden: int = 1024,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3 or any(int(v) < 1 for v in in_shape):
            raise ValueError(f"in_shape must be 3 positive ints (C, H, W), got {in_shape!r}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        in_ch, h, w = (int(v) for v in in_shape)
        # (out_channels, kernel_size, pool_after)
        spec = ((64, 5, True), (192, 5, True), (384, 3, False), (256, 3, False), (256, 3, True))
        layers: list[nn.Module] = []
        for out_ch, k, pool in spec:
            layers += [nn.Conv2d(in_ch, out_ch, k, padding=k // 2), nn.ReLU(inplace=True)]
            if pool and min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(in_ch * 2 * 2, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, int(num_classes)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(N, num_classes)``."""
        return self.classifier(self.pool(self.features(x)))


def alexnet(
    in_shape: tuple[int, int, int], num_classes: int, hidden: int = 1024, **kwargs: Any
) -> nn.Module:
    """Build a small-input AlexNet.

    Args:
        in_shape: Input shape ``(channels, height, width)``.
        num_classes: Number of output classes (>= 2).
        hidden: Width of the two hidden fully connected layers.
        **kwargs: Ignored; accepted for a uniform factory signature.

    Returns:
        The model.
    """
    del kwargs
    return AlexNet(in_shape, num_classes, hidden=hidden)
