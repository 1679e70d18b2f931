"""The one epoch loop of both kinds of training, with small callbacks.

:class:`EpochLoop` runs epochs of a :class:`Trainable` (what a kind trains: the batches of an
epoch and one optimizer step, in the spirit of Ray Tune's ``Trainable``) and fans every hook
out to its callbacks in order (:meth:`EpochLoop.notify`, in the spirit of skorch's
``notify``). A K-fold job (:func:`raynn.kfold.train.train_job`) and a HOGWILD worker
(:func:`raynn.hogwild.loop.train`) are both this loop; what differs is their trainable and
their callbacks: :class:`Checkpointing`, :class:`ThreadSchedule` (a replayed widening),
:class:`Hooks` (plain callables: a lease's renewal and widening, a node's sync).

One epoch, for every kind::

    on_epoch_begin
    for each batch of trainable.batches():
        should_stop?  (any callback: the loop leaves, state.stopped)
        on_step_begin; trainable.train_step(batch); on_step_end
    on_epoch_end

and ``on_train_begin`` / ``on_train_end`` around the epochs (``on_train_end`` also when a
hook raises). The callbacks are called in this order: the :class:`NanGuard`, the trainable
itself (its bookkeeping), then the callbacks given, in their order.

**The NaN policy** (one for both kinds, held by :class:`NanGuard`): the first non-finite
training loss the loop sees ends it at once. Nothing of the failing epoch or step reaches the
callbacks after the guard (no epoch record, no checkpoint, no epoch hook, no sync), no epoch
follows, and ``state.failure`` names the loss, its epoch and its batch; the kind fails with
that (a K-fold job's row, a HOGWILD worker's error, which fails the run). The guard reads the
loss as soon as the step makes it known: each step's, where the step reads its loss anyway
(``state.step_loss``: HOGWILD, whose shared weights must never take a non-finite step), or
the epoch's at its end, where the losses stay tensors to spare a sync per step
(``state.epoch_losses``: K-fold, whose weights are the job's own and are dropped).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from raynn.core.checkpoint import CheckpointWriter

HOOKS = (
    "on_train_begin",
    "on_epoch_begin",
    "should_stop",
    "on_step_begin",
    "on_step_end",
    "on_epoch_end",
    "on_train_end",
)


@dataclass
class NonFiniteLoss:
    """Why the loop failed: the first non-finite training loss, its epoch and its batch
    (both counted from 0; the batch within the epoch)."""

    value: float
    epoch: int
    batch: int

    def describe(self, where: str, fix: str) -> str:
        """``loss became <value> at epoch <epoch + 1>, <where>; <fix>``: a failure's line."""
        return f"loss became {self.value} at epoch {self.epoch + 1}, {where}; {fix}"


@dataclass
class LoopState:
    """Where the loop is. A kind may extend it (HOGWILD's ``LoopStats``)."""

    epoch: int = 0  # the epoch running, from 0
    batch: int = 0  # the step's batch within the epoch, from 0
    step_loss: float | None = None  # the step's loss, where the step reads it
    epoch_losses: torch.Tensor | None = None  # the epoch's step losses, where kept as tensors
    epoch_seconds: float = 0.0  # the epoch's training time (the trainable measures it)
    stopped: bool = False  # left before the last epoch: a callback asked
    failure: NonFiniteLoss | None = None  # the NaN guard ended the loop


class Callback:
    """A set of hooks of the loop, each given the loop; every one does nothing here."""

    def on_train_begin(self, loop: EpochLoop) -> None:
        """Before the first epoch."""

    def on_epoch_begin(self, loop: EpochLoop) -> None:
        """Before the epoch's batches are drawn (``loop.state.epoch`` is set)."""

    def should_stop(self, loop: EpochLoop) -> bool:
        """Asked before every step: True leaves the loop there (``state.stopped``)."""
        return False

    def on_step_begin(self, loop: EpochLoop) -> None:
        """Before every step (``loop.state.batch`` is set)."""

    def on_step_end(self, loop: EpochLoop) -> None:
        """After every step."""

    def on_epoch_end(self, loop: EpochLoop) -> None:
        """After the epoch's last step."""

    def on_train_end(self, loop: EpochLoop) -> None:
        """After the last epoch, a stop, a failure, or a hook that raised."""


class Trainable(Callback):
    """What a kind trains: its epochs' batches and its step (cf. Ray Tune's ``Trainable``);
    its bookkeeping goes in the hooks, which run right after the NaN guard's."""

    def batches(self, loop: EpochLoop) -> Iterable[Any]:
        """Begin epoch ``loop.state.epoch``: its batches, in order."""
        raise NotImplementedError

    def train_step(self, loop: EpochLoop, batch: Any) -> None:
        """One optimizer step on ``batch``."""
        raise NotImplementedError

    def save_state(self, loop: EpochLoop) -> dict[str, Any]:
        """A checkpoint's state after epoch ``loop.state.epoch`` (:class:`Checkpointing`)."""
        raise NotImplementedError


class NanGuard(Callback):
    """The one NaN policy (see the module): the first non-finite loss fails the loop."""

    def on_step_end(self, loop: EpochLoop) -> None:
        state = loop.state
        if state.step_loss is not None and not math.isfinite(state.step_loss):
            state.failure = NonFiniteLoss(state.step_loss, state.epoch, state.batch)

    def on_epoch_end(self, loop: EpochLoop) -> None:
        state, losses = loop.state, loop.state.epoch_losses
        if losses is None:
            return
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            state.failure = NonFiniteLoss(float(losses[bad]), state.epoch, bad)


def _overrides(callback: Callback, hook: str) -> bool:
    return getattr(type(callback), hook) is not getattr(Callback, hook)


class EpochLoop:
    """Runs a trainable's epochs, notifying the NaN guard, the trainable and ``callbacks``.

    Args:
        trainable: what is trained (its batches and step).
        callbacks: the kind's callbacks, called in this order after the guard and trainable.
        state: the loop's state (default: a new :class:`LoopState`).
    """

    def __init__(
        self,
        trainable: Trainable,
        callbacks: Sequence[Callback] = (),
        state: LoopState | None = None,
    ) -> None:
        self.trainable = trainable
        self.state = state if state is not None else LoopState()
        self.callbacks: list[Callback] = [NanGuard(), trainable, *callbacks]
        # only the hooks a callback defines are called: a step costs no empty calls
        self._hooks = {
            hook: [getattr(cb, hook) for cb in self.callbacks if _overrides(cb, hook)]
            for hook in HOOKS
        }

    def notify(self, hook: str) -> None:
        """Call ``hook`` of every callback in order; a failure ends the fan-out (the callbacks
        after the guard never see a failed step or epoch), except of ``on_train_end``."""
        for fn in self._hooks[hook]:
            if self.state.failure is not None and hook != "on_train_end":
                return
            fn(self)

    def run(self, first: int, epochs: int) -> LoopState:
        """Train epochs ``first`` to ``epochs - 1``; the state (``stopped``, ``failure``)."""
        try:
            self.notify("on_train_begin")
            for epoch in range(first, epochs):
                if not self._epoch(epoch):
                    break
        finally:
            self.notify("on_train_end")
        return self.state

    def _epoch(self, epoch: int) -> bool:
        state = self.state
        state.epoch, state.batch = epoch, 0
        self.notify("on_epoch_begin")
        stops = self._hooks["should_stop"]
        for b, batch in enumerate(self.trainable.batches(self)):
            if stops and any(stop(self) for stop in stops):
                state.stopped = True
                return False
            state.batch = b
            self.notify("on_step_begin")
            self.trainable.train_step(self, batch)
            self.notify("on_step_end")
            if state.failure is not None:
                return False
        self.notify("on_epoch_end")
        return state.failure is None


StateHook = Callable[[Any], None]


class Hooks(Callback):
    """Plain callables as a callback: ``before_step(state)``, ``after_step(state)``,
    ``should_stop()`` and ``after_epoch(state)``, each optional (``state``: the loop's)."""

    def __init__(
        self,
        before_step: StateHook | None = None,
        after_step: StateHook | None = None,
        should_stop: Callable[[], bool] | None = None,
        after_epoch: StateHook | None = None,
    ) -> None:
        self.before_step, self.after_step = before_step, after_step
        self.stop, self.after_epoch = should_stop, after_epoch

    def should_stop(self, loop: EpochLoop) -> bool:
        return self.stop is not None and self.stop()

    def on_step_begin(self, loop: EpochLoop) -> None:
        if self.before_step is not None:
            self.before_step(loop.state)

    def on_step_end(self, loop: EpochLoop) -> None:
        if self.after_step is not None:
            self.after_step(loop.state)

    def on_epoch_end(self, loop: EpochLoop) -> None:
        if self.after_epoch is not None:
            self.after_epoch(loop.state)


def epoch_threads(threads: int | Sequence[int], epoch: int) -> int:
    """The torch threads of ``epoch``: ``threads``, or its entry for the epoch (the last
    entry for every later epoch)."""
    if isinstance(threads, int):
        return threads
    return threads[min(epoch, len(threads) - 1)]


class ThreadSchedule(Callback):
    """Each epoch its own torch thread count (replaying a job that tail widening gave more
    threads from some epoch on): :func:`epoch_threads`."""

    def __init__(self, threads: Sequence[int]) -> None:
        self.threads = threads

    def on_epoch_begin(self, loop: EpochLoop) -> None:
        torch.set_num_threads(epoch_threads(self.threads, loop.state.epoch))


class Checkpointing(Callback):
    """Saves the trainable's state (:meth:`Trainable.save_state`) in the background after an
    epoch, when due: every ``every_epochs`` epochs, else once ``every_seconds`` of training
    time (``state.epoch_seconds``) passed since the last one (0 or None: never); never after
    the last epoch (the result follows). The loop's end waits for the last one."""

    def __init__(
        self,
        writer: CheckpointWriter,
        epochs: int,
        every_epochs: int | None = None,
        every_seconds: float | None = None,
    ) -> None:
        self.writer, self.epochs = writer, epochs
        self.every_epochs, self.every_seconds = every_epochs, every_seconds
        self.since = 0.0

    def on_epoch_end(self, loop: EpochLoop) -> None:
        done = loop.state.epoch + 1
        self.since += loop.state.epoch_seconds
        if self.every_epochs:
            due = done % self.every_epochs == 0
        else:
            due = bool(self.every_seconds) and self.since >= self.every_seconds
        if due and done < self.epochs:
            self.writer.submit(loop.trainable.save_state(loop))
            self.since = 0.0

    def on_train_end(self, loop: EpochLoop) -> None:
        self.writer.close()


__all__ = [
    "Callback",
    "Checkpointing",
    "EpochLoop",
    "Hooks",
    "LoopState",
    "NanGuard",
    "NonFiniteLoss",
    "ThreadSchedule",
    "Trainable",
    "epoch_threads",
]
