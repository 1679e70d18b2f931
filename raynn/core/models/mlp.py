"""Multi-layer perceptron on flattened images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU (-> Dropout)]* -> Linear.

    Args:
        in_shape: Input shape ``(channels, height, width)``.
        num_classes: Number of output logits.
        hidden: Widths of the hidden layers.
        dropout: Dropout probability after each hidden activation (0 disables).
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3 or any(int(v) < 1 for v in in_shape):
            raise ValueError(f"in_shape must be 3 positive ints (C, H, W), got {in_shape!r}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        in_features = int(in_shape[0]) * int(in_shape[1]) * int(in_shape[2])
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            width = int(width)
            if width < 1:
                raise ValueError(f"hidden widths must be positive, got {list(hidden)!r}")
            layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            in_features = width
        layers.append(nn.Linear(in_features, int(num_classes)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(N, num_classes)``."""
        return self.net(x)


def mlp(
    in_shape: tuple[int, int, int],
    num_classes: int,
    hidden: Sequence[int] = (256, 128),
    dropout: float = 0.0,
    **kwargs: Any,
) -> nn.Module:
    """Build an MLP classifier.

    Args:
        in_shape: Input shape ``(channels, height, width)``.
        num_classes: Number of output classes (>= 2).
        hidden: Widths of the hidden layers.
        dropout: Dropout probability after each hidden activation.
        **kwargs: Ignored; accepted for a uniform factory signature.

    Returns:
        The model.
    """
    del kwargs
    return MLP(in_shape, num_classes, hidden=hidden, dropout=dropout)
