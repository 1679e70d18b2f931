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


def echo_worker(conn, payload, tag):  # noqa: ANN001 - a zygote target (raynn.scheduler.processes)
    """Send back what a forked worker sees: its tag, the payload, its pid and thread count."""
    import os

    from raynn.scheduler.processes import send

    send(conn, (tag, payload, os.getpid(), len(os.listdir("/proc/self/task"))))


def sleeping_worker(conn, payload, seconds):  # noqa: ANN001 - a zygote target
    """Report the pid, then sleep (a worker that is busy when its driver dies)."""
    import os
    import time

    from raynn.scheduler.processes import send

    send(conn, os.getpid())
    time.sleep(seconds)
