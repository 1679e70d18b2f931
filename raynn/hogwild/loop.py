"""The HOGWILD training step and loop, shared by the serial baseline and the parallel workers.

:func:`train` is the loop: each epoch the (seeded) permutation of the training set is split
across all workers (:func:`epoch_shard`) and a worker steps through its part in batches with
:func:`sgd_step`. The serial baseline calls it with ``workers=1``; a
:class:`~raynn.hogwild.worker.HogwildWorker` with its index. Optimizers and schedules come
from the one factory of both kinds (:func:`raynn.core.optim.make_optimizer`,
:func:`raynn.core.optim.make_schedule`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from raynn.core.data import ArrayDataset
from raynn.core.losses import Loss, build_loss
from raynn.core.nn import seeded_model
from raynn.core.optim import LRSchedule
from raynn.errors import TrainingError
from raynn.spec.checks import Component
from raynn.spec.hogwild import HogwildSpec


def make_loss(spec: HogwildSpec, data: ArrayDataset) -> Loss:
    """The spec's ``training.loss`` for the dataset's classes (each process builds its own)."""
    return build_loss(spec.training.loss, data.num_classes)


def build(spec: HogwildSpec, data: ArrayDataset) -> nn.Module:
    """The spec's model, initialised from the run seed (identical in every process)."""
    return seeded_model(spec.model, spec.seed, data.in_shape, data.num_classes)


def build_loss_default() -> Loss:
    """Plain cross-entropy (what :func:`train` uses when given no loss)."""
    return build_loss(Component("cross_entropy"), 2)


def epoch_shard(n: int, seed: int, epoch: int, worker: int, workers: int) -> np.ndarray:
    """Worker ``worker``'s part of epoch ``epoch``: a slice of one seeded permutation of n."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return np.array_split(order, workers)[worker]


def sgd_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    xb: torch.Tensor,
    yb: torch.Tensor,
) -> tuple[float, int]:
    """One optimizer step on a batch; returns ``(loss, correct predictions)``.

    The step writes the weights in place (``p.add_``): in a worker those are views into shared
    memory, so this *is* the lock-free HOGWILD update.
    """
    opt.zero_grad(set_to_none=True)
    logits = model(xb)
    loss = loss_fn(logits, yb)
    value = loss.item()
    if not math.isfinite(value):
        return value, 0
    loss.backward()
    opt.step()
    return value, int((logits.argmax(1) == yb).sum())


@dataclass
class LoopStats:
    """What one worker's loop did."""

    steps: int = 0
    samples: int = 0
    epochs: int = 0
    seconds: float = 0.0
    excluded_seconds: float = 0.0
    hold_seconds: float = 0.0
    loss: float = math.nan
    accuracy: float = math.nan
    stopped: bool = False  # left before the last epoch: the round ended


def train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    schedule: LRSchedule,
    data: ArrayDataset,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    worker: int = 0,
    workers: int = 1,
    start_epoch: int = 0,
    before_step: Callable[[LoopStats], None] | None = None,
    after_step: Callable[[LoopStats], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    label: str = "serial",
    loss_fn: Loss | None = None,
) -> LoopStats:
    """Train on this worker's part of every epoch from ``start_epoch`` to ``epochs``.

    Args:
        model: the model (its tensors may be shared-memory views).
        opt: its optimizer; schedule: its learning-rate schedule.
        data: the dataset (only the training split is used).
        epochs: total epochs of the run; batch_size: samples per step.
        seed: the run seed (one permutation per epoch for all workers).
        worker: this worker's index among ``workers`` (all nodes).
        start_epoch: first epoch to run (resume).
        before_step: called before every step (pause while the node is held).
        after_step: called after every step with the running counts (publish, sync, eval).
        should_stop: asked before every step; True ends the loop there (``stats.stopped``).
        label: the worker's name, for error messages.
        loss_fn: the loss (:func:`make_loss`); None: plain cross-entropy.

    Raises:
        TrainingError: the loss became NaN or infinite.
    """
    norm = data.normalizer()
    loss_fn = loss_fn if loss_fn is not None else build_loss_default()
    stats = LoopStats()
    t0 = time.perf_counter()
    n = len(data.y_train)
    # the schedule picks up where the run left off, not at its first epoch
    share = n // workers + (worker < n % workers)  # len(epoch_shard(...)), every epoch
    schedule.skip([math.ceil(share / batch_size)] * start_epoch)
    for epoch in range(start_epoch, epochs):
        model.train()
        loss_fn.train()
        idx = epoch_shard(n, seed, epoch, worker, workers)
        loss_sum, correct = 0.0, 0
        for b in range(0, len(idx), batch_size):
            if should_stop is not None and should_stop():
                stats.stopped = True
                break
            if before_step is not None:
                before_step(stats)
            bi = idx[b : b + batch_size]
            xb, yb = norm(data.x_train, bi), torch.from_numpy(data.y_train[bi])
            value, hits = sgd_step(model, opt, loss_fn, xb, yb)
            if not math.isfinite(value):
                raise TrainingError(
                    f"loss became {value} at epoch {epoch + 1}, step {stats.steps + 1} of "
                    f"{label}; lower optimizer.lr (spec key 'optimizer.lr') or check the data"
                )
            schedule.after_batch()
            stats.steps += 1
            stats.samples += len(bi)
            loss_sum += value * len(bi)
            correct += hits
            if after_step is not None:
                after_step(stats)
        if stats.stopped:
            break
        stats.epochs = epoch + 1
        if len(idx):
            stats.loss, stats.accuracy = loss_sum / len(idx), correct / len(idx)
        schedule.after_epoch(stats.loss)
    stats.seconds = time.perf_counter() - t0 - stats.excluded_seconds
    return stats


__all__ = [
    "LoopStats",
    "build",
    "build_loss_default",
    "epoch_shard",
    "make_loss",
    "sgd_step",
    "train",
]
