"""CIFAR-style MobileNetV2 that adapts its strides to small inputs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# (expansion t, output channels c, number of blocks n, first-block stride s).
# CIFAR variant: stride 1 in the stem and in the first two downsampling stages.
_CFG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (never below it or 90% of value)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _conv_bn_relu6(
    in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> ReLU6."""
    return nn.Sequential(
        nn.Conv2d(
            in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear projection.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        stride: Stride of the depthwise conv (1 or 2).
        expansion: Expansion factor of the hidden layer.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_relu6(in_ch, hidden, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block (with identity shortcut when shapes allow)."""
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """CIFAR-style MobileNetV2.

    Stride-2 stages fall back to stride 1 once the spatial size is already <= 2, so inputs as
    small as 8x8 (or smaller) never shrink below 1x1.

    Args:
        in_shape: Input shape ``(channels, height, width)``.
        num_classes: Number of output logits.
        width_mult: Channel multiplier.
    """

    def __init__(
        self, in_shape: tuple[int, int, int], num_classes: int, width_mult: float = 1.0
    ) -> None:
        super().__init__()
        if len(in_shape) != 3 or any(int(v) < 1 for v in in_shape):
            raise ValueError(f"in_shape must be 3 positive ints (C, H, W), got {in_shape!r}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        c, h, w = (int(v) for v in in_shape)

        in_ch = _make_divisible(32 * width_mult)
        last_ch = _make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [_conv_bn_relu6(c, in_ch, 3, stride=1)]
        for t, ch, n, s in _CFG:
            out_ch = _make_divisible(ch * width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                if stride == 2 and min(h, w) <= 2:
                    stride = 1
                layers.append(InvertedResidual(in_ch, out_ch, stride, t))
                if stride == 2:
                    h, w = (h + 1) // 2, (w + 1) // 2
                in_ch = out_ch
        layers.append(_conv_bn_relu6(in_ch, last_ch, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last_ch, int(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(N, num_classes)``."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def mobilenet(
    in_shape: tuple[int, int, int], num_classes: int, width_mult: float = 1.0, **kwargs: Any
) -> nn.Module:
    """Build a CIFAR-style MobileNetV2.

    Args:
        in_shape: Input shape ``(channels, height, width)``.
        num_classes: Number of output classes (>= 2).
        width_mult: Channel multiplier (channels rounded to multiples of 8).
        **kwargs: Ignored; accepted for a uniform factory signature.

    Returns:
        The model.
    """
    del kwargs
    return MobileNetV2(in_shape, num_classes, width_mult=width_mult)
