"""The HOGWILD training step and loop, shared by the serial baseline and the parallel workers.

:func:`train` is the loop, the one of both kinds (:class:`~raynn.core.epochs.EpochLoop`):
each epoch the (seeded) permutation of the training set is split across all workers
(:func:`epoch_shard`) and a worker steps through its part in batches with :func:`sgd_step`
(:class:`ShardTraining`). What it trains is a :class:`TrainContext`; what happens around the
steps (a node's hold, sync and stop, the serial baseline's evaluations) are its callbacks. The
serial baseline calls it with ``workers=1``; a :class:`~raynn.hogwild.worker.HogwildWorker`
with its index. Optimizers and schedules come from the one factory of both kinds
(:func:`raynn.core.optim.make_optimizer`, :func:`raynn.core.optim.make_schedule`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from raynn.core.data import ArrayDataset
from raynn.core.epochs import Callback, EpochLoop, Hooks, LoopState, Trainable
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
class LoopStats(LoopState):
    """What one worker's loop did (the loop's state, with its counts)."""

    steps: int = 0
    samples: int = 0
    epochs: int = 0
    seconds: float = 0.0
    excluded_seconds: float = 0.0
    hold_seconds: float = 0.0
    loss: float = math.nan
    accuracy: float = math.nan


@dataclass
class TrainContext:
    """What :func:`train` trains: one worker's model, optimizer, schedule and part of the data.

    Attributes:
        model: the model (its tensors may be shared-memory views).
        opt: its optimizer; schedule: its learning-rate schedule.
        data: the dataset (only the training split is used).
        epochs: total epochs of the run; batch_size: samples per step.
        seed: the run seed (one permutation per epoch for all workers).
        worker: this worker's index among ``workers`` (all nodes).
        start_epoch: first epoch to run (resume).
        label: the worker's name, for error messages.
        loss_fn: the loss (:func:`make_loss`); None: plain cross-entropy.
    """

    model: nn.Module
    opt: torch.optim.Optimizer
    schedule: LRSchedule
    data: ArrayDataset
    epochs: int
    batch_size: int
    seed: int
    worker: int = 0
    workers: int = 1
    start_epoch: int = 0
    label: str = "serial"
    loss_fn: Loss | None = None

    @classmethod
    def of(
        cls,
        spec: HogwildSpec,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        schedule: LRSchedule,
        data: ArrayDataset,
        **rest: Any,
    ) -> TrainContext:
        """The context of ``spec``'s run (its epochs, batch size and seed); ``rest``: the
        other fields."""
        t = spec.training
        return cls(model, opt, schedule, data, t.epochs, t.batch_size, spec.seed, **rest)


class ShardTraining(Trainable):
    """A HOGWILD worker's epochs on the one loop (:class:`~raynn.core.epochs.EpochLoop`): its
    part of each epoch's seeded permutation (:func:`epoch_shard`) in batches, each a
    :func:`sgd_step` whose loss the NaN guard reads at once; the counts go to its
    :class:`LoopStats`."""

    def __init__(self, ctx: TrainContext, stats: LoopStats) -> None:
        self.ctx, self.stats = ctx, stats
        self.norm = ctx.data.normalizer()
        self.loss_fn = ctx.loss_fn if ctx.loss_fn is not None else build_loss_default()
        self.n = len(ctx.data.y_train)

    def on_train_begin(self, loop: EpochLoop) -> None:
        c = self.ctx
        # the schedule picks up where the run left off, not at its first epoch
        share = self.n // c.workers + (c.worker < self.n % c.workers)  # len(epoch_shard(...))
        c.schedule.skip([math.ceil(share / c.batch_size)] * c.start_epoch)

    def batches(self, loop: EpochLoop) -> Iterator[np.ndarray]:
        c = self.ctx
        c.model.train()
        self.loss_fn.train()
        self.idx = epoch_shard(self.n, c.seed, loop.state.epoch, c.worker, c.workers)
        self.loss_sum, self.correct = 0.0, 0
        idx, size = self.idx, c.batch_size
        return (idx[b : b + size] for b in range(0, len(idx), size))

    def train_step(self, loop: EpochLoop, batch: np.ndarray) -> None:
        c = self.ctx
        xb, yb = self.norm(c.data.x_train, batch), torch.from_numpy(c.data.y_train[batch])
        loop.state.step_loss, self.hits = sgd_step(c.model, c.opt, self.loss_fn, xb, yb)
        self.size = len(batch)

    def on_step_end(self, loop: EpochLoop) -> None:
        self.ctx.schedule.after_batch()
        stats = self.stats
        stats.steps += 1
        stats.samples += self.size
        self.loss_sum += stats.step_loss * self.size  # type: ignore[operator]
        self.correct += self.hits

    def on_epoch_end(self, loop: EpochLoop) -> None:
        stats, n = self.stats, len(self.idx)
        stats.epochs = loop.state.epoch + 1
        if n:
            stats.loss, stats.accuracy = self.loss_sum / n, self.correct / n
        self.ctx.schedule.after_epoch(stats.loss)


NAN_FIX = "lower optimizer.lr (spec key 'optimizer.lr') or check the data"


def train(ctx: TrainContext, callbacks: Sequence[Callback] = ()) -> LoopStats:
    """Train on this worker's part of every epoch from ``ctx.start_epoch`` to ``ctx.epochs``.

    ``callbacks`` (:class:`~raynn.core.epochs.Callback`, e.g. :class:`Hooks`) run after every
    step's bookkeeping, in order: pause while the node is held, publish and sync, evaluate,
    stop (``stats.stopped``) when the round ends.

    Raises:
        TrainingError: the loss became NaN or infinite (the loop's NaN guard).
    """
    stats = LoopStats()
    training = ShardTraining(ctx, stats)
    t0 = time.perf_counter()
    EpochLoop(training, callbacks, state=stats).run(ctx.start_epoch, ctx.epochs)
    if stats.failure is not None:
        where = f"step {stats.steps + 1} of {ctx.label}"
        raise TrainingError(stats.failure.describe(where, NAN_FIX))
    stats.seconds = time.perf_counter() - t0 - stats.excluded_seconds
    return stats


__all__ = [
    "Hooks",
    "LoopStats",
    "ShardTraining",
    "TrainContext",
    "build",
    "build_loss_default",
    "epoch_shard",
    "make_loss",
    "sgd_step",
    "train",
]
