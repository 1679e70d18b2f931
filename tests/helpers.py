"""User-code models for tests, referenced as ``tests.helpers:NAME`` in specs."""

from __future__ import annotations

import torch
from torch import nn


class _Exploding(nn.Module):
    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * float("inf")


def exploding_mlp(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A model whose logits are infinite: its loss is NaN from the first batch."""
    c, h, w = in_shape
    return _Exploding(c * h * w, num_classes)
