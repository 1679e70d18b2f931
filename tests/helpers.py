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


def echo_worker(conn, payload, tag):  # noqa: ANN001 - a zygote target (raynn.placement.processes)
    """Send back what a forked worker sees: its tag, the payload, its pid and thread count."""
    import os

    from raynn.placement.processes import send

    send(conn, (tag, payload, os.getpid(), len(os.listdir("/proc/self/task"))))


def sleeping_worker(conn, payload, seconds):  # noqa: ANN001 - a zygote target
    """Report the pid, then sleep (a worker that is busy when its driver dies)."""
    import os
    import time

    from raynn.placement.processes import send

    send(conn, os.getpid())
    time.sleep(seconds)


class _OnTrain(nn.Module):
    """A linear model that runs :meth:`on_train_forward` before each training forward."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def on_train_forward(self) -> None:
        """What the test's model does besides training (hang, sleep, wait)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.on_train_forward()
        return self.fc(x.flatten(1))


class _HangsOnce(_OnTrain):
    """An MLP whose first training forward, in the first process to reach it, never returns."""

    def __init__(self, in_features: int, num_classes: int, marker: str) -> None:
        super().__init__(in_features, num_classes)
        self.marker = marker

    def on_train_forward(self) -> None:
        import os
        import time

        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        while True:  # alive but stuck: only a lease deadline gets this job back
            time.sleep(60)


def hangs_once_mlp(in_shape: tuple[int, int, int], num_classes: int, marker: str) -> nn.Module:
    """A model whose first training step hangs forever (in whichever worker runs it first)."""
    c, h, w = in_shape
    return _HangsOnce(c * h * w, num_classes, marker)


class _Sleepy(_OnTrain):
    """An MLP whose training forward also sleeps: its jobs' wall time is the sleep, whatever
    the load on the machine's CPUs."""

    def __init__(self, in_features: int, num_classes: int, seconds: float) -> None:
        super().__init__(in_features, num_classes)
        self.seconds = seconds

    def on_train_forward(self) -> None:
        import time

        time.sleep(self.seconds)


def sleepy_mlp(in_shape: tuple[int, int, int], num_classes: int, seconds: float) -> nn.Module:
    """A model whose every training step sleeps ``seconds``: jobs of equal length under load."""
    c, h, w = in_shape
    return _Sleepy(c * h * w, num_classes, seconds)


class _Gated(_OnTrain):
    """An MLP whose training forward waits until the file ``gate`` exists (at most 300 s)."""

    def __init__(self, in_features: int, num_classes: int, gate: str) -> None:
        super().__init__(in_features, num_classes)
        self.gate = gate

    def on_train_forward(self) -> None:
        import os
        import time

        deadline = time.monotonic() + 300.0
        while not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.05)  # waits on the test's event: the file it creates


def gated_mlp(in_shape: tuple[int, int, int], num_classes: int, gate: str) -> nn.Module:
    """A model whose training steps wait for the test to create ``gate``: its jobs are still
    running, whatever the machine's speed, until the test has seen what it waits for."""
    c, h, w = in_shape
    return _Gated(c * h * w, num_classes, gate)
