"""VGG with batch norm (configs A and D) for small images."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def _scale(channels: int, width_mult: float) -> int:
    """Scale a channel count, keeping it an int >= 8."""
    return max(8, round(channels * width_mult))


class VGG(nn.Module):
    """VGG-BN feature extractor with a CIFAR-style single linear classifier.

    Max-pools are skipped once the spatial size would drop below 1, so 8x8 inputs work.

    Args:
        cfg: Layer config: ints are 3x3 conv widths, ``"M"`` is a 2x2 max-pool.
        in_shape: Input shape ``(channels, height, width)``.
        num_classes: Number of output logits.
        width_mult: Channel multiplier.
    """

    def __init__(
        self,
        cfg: list[int | str],
        in_shape: tuple[int, int, int],
        num_classes: int,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3 or any(int(v) < 1 for v in in_shape):
            raise ValueError(f"in_shape must be 3 positive ints (C, H, W), got {in_shape!r}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        in_ch, h, w = (int(v) for v in in_shape)
        layers: list[nn.Module] = []
        for item in cfg:
            if item == "M":
                if min(h, w) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                continue
            out_ch = _scale(int(item), width_mult)
            layers += [
                nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_ch, int(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(N, num_classes)``."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def vgg11(
    in_shape: tuple[int, int, int], num_classes: int, width_mult: float = 1.0, **kwargs: Any
) -> nn.Module:
    """Build VGG-11 with batch norm (config A).

    Args:
        in_shape: Input shape ``(channels, height, width)``.
        num_classes: Number of output classes (>= 2).
        width_mult: Channel multiplier (channels kept >= 8).
        **kwargs: Ignored; accepted for a uniform factory signature.

    Returns:
        The model.
    """
    del kwargs
    return VGG(_CFGS["A"], in_shape, num_classes, width_mult=width_mult)


def vgg16(
    in_shape: tuple[int, int, int], num_classes: int, width_mult: float = 1.0, **kwargs: Any
) -> nn.Module:
    """Build VGG-16 with batch norm (config D).

    Args:
        in_shape: Input shape ``(channels, height, width)``.
        num_classes: Number of output classes (>= 2).
        width_mult: Channel multiplier (channels kept >= 8).
        **kwargs: Ignored; accepted for a uniform factory signature.

    Returns:
        The model.
    """
    del kwargs
    return VGG(_CFGS["D"], in_shape, num_classes, width_mult=width_mult)


vgg = vgg11
