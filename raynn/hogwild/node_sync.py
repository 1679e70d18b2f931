"""A node's sync role: its link to the parameter server, run by the node's first worker.

Between its own steps, every ``push_every`` node steps :class:`NodeSync` pushes the node's
update to the parameter server and folds the returned global weights into the node's shared
buffer (:class:`~raynn.hogwild.shared_params.SharedParams`), lock-free. The serial baseline
pushes through the same code, its model's weights seen as a node's (:class:`ModelWeights`).

Both are callbacks of the one epoch loop (:class:`~raynn.core.epochs.EpochLoop`):
:class:`NodeSlot` is a worker's part (wait while the node is held, publish its counts, leave
when the round stops) and :class:`NodeSync` the sync role's (sync after a step).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from torch import nn

from raynn.core.epochs import Callback, EpochLoop
from raynn.hogwild.client import PendingPush, ServerClient
from raynn.hogwild.loop import LoopStats
from raynn.hogwild.protocol import PushReply
from raynn.hogwild.shared_params import SharedParams, flatten


@dataclass
class SyncStats:
    """What a node's sync role did."""

    pushes: int = 0
    pulls: int = 0
    refused: int = 0
    wait_seconds: float = 0.0
    sync_seconds: float = 0.0
    staleness: Counter[int] = field(default_factory=Counter)


class ModelWeights:
    """A model trained in this process, as :class:`NodeSync` sees a node's weights (the serial
    baseline): a snapshot is its flat vector, its counts are what :meth:`record` was told.
    Nobody waits on ``hold``; its sync runs with ``fold=False``."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.steps = self.samples = 0
        self.hold = False

    def record(self, steps: int, samples: int) -> None:
        """The steps and samples the model has taken so far."""
        self.steps, self.samples = steps, samples

    def node_steps(self) -> int:
        return self.steps

    def node_samples(self) -> int:
        return self.samples

    def snapshot(self) -> np.ndarray:
        return flatten(self.model)


class NodeSlot(Callback):
    """A worker's part of its node, as a callback of the loop: before a step it waits while
    the node is held (a stale-synchronous push of the node is waiting; counted in
    ``hold_seconds``), after it publishes its counts in its slot, and it leaves at the next
    step once the round is stopped."""

    def __init__(self, shared: SharedParams, slot: int) -> None:
        self.shared, self.slot = shared, slot

    def should_stop(self, loop: EpochLoop) -> bool:
        return self.shared.stop

    def on_step_begin(self, loop: EpochLoop) -> None:
        if self.shared.hold:
            cast(LoopStats, loop.state).hold_seconds += self.shared.wait_while_held()

    def on_step_end(self, loop: EpochLoop) -> None:
        stats = cast(LoopStats, loop.state)
        self.shared.record(self.slot, stats.steps, stats.samples)


class NodeSync(Callback):
    """A node's link to the parameter server (run by the node's first worker).

    Pushes are pipelined: the sync role snapshots the shared weights, sends
    ``snapshot - last_synced`` and goes on training; when the reply arrives (checked without
    waiting between steps) it adds ``global - snapshot`` to the shared buffer, which keeps every
    step the node's workers took meanwhile. One push is in flight at a time. A push the server
    refuses (stale-synchronous) is retried while the whole node is held.

    Args:
        node: the node's name (as registered on the server).
        shared: the node's shared weights.
        client: the (possibly sharded) server.
        initial: the weights the node's segment started from (the server's at ``version``).
        version: the server version ``initial`` came from.
        push_every: node steps between pushes (None: only every ``push_seconds``).
        push_seconds: also push when this many seconds passed since the last push (None: no).
        pull_every: node steps between pulls (0: only with pushes).
        param_count: leading entries of the flat vector that are parameters.
        fold: fold the server's weights into the node's (False: the node's weights are the
            only ones the server gets, the serial baseline's: the server mirrors them and the
            node trains on untouched, however often it pushes).

    As a callback of the loop, it syncs after every step (:meth:`maybe_sync`).
    """

    POLL_SECONDS = 0.002
    STOP_GRACE_SECONDS = 2.0  # a live worker leaves within one step of being stopped

    def __init__(
        self,
        node: str,
        shared: SharedParams | ModelWeights,
        client: ServerClient,
        initial: np.ndarray,
        version: int,
        push_every: int | None,
        pull_every: int,
        param_count: int,
        push_seconds: float | None = None,
        *,
        fold: bool = True,
    ) -> None:
        self.node = node
        self.fold = fold
        self.shared = shared
        self.client = client
        self.last = np.array(initial, dtype=np.float32)
        self.version = version
        self.push_every = push_every
        self.push_seconds = push_seconds
        self._last_push = time.monotonic()
        self.pull_every = pull_every
        self.param_count = param_count
        self.seq = 0
        self.synced_steps = self.synced_samples = self.pulled_steps = 0
        self.stats = SyncStats()
        self._pending: PendingPush | None = None
        self._next_poll = 0.0
        self._sent: tuple[np.ndarray, int, int, float] | None = None  # snapshot, steps, samples, t

    def on_step_end(self, loop: EpochLoop) -> None:
        self.maybe_sync()

    def maybe_sync(self) -> None:
        """Complete an answered push, or start one (or a pull) when enough steps were taken."""
        if self._pending is not None:
            # asking Ray whether the reply is there costs ~90 us, a sixth of a small step:
            # ask at most every POLL_SECONDS
            now = time.monotonic()
            if now < self._next_poll:
                return
            self._next_poll = now + self.POLL_SECONDS
            reply = self._pending.poll()
            if reply is not None:
                self._complete(reply)
            return
        steps = self.shared.node_steps()
        due = self.push_every is not None and steps - self.synced_steps >= self.push_every
        if not due and self.push_seconds is not None:
            due = time.monotonic() - self._last_push >= self.push_seconds
        if due:
            self._start()
        elif self.pull_every and steps - self.pulled_steps >= self.pull_every:
            self.pull()

    def _start(self) -> None:
        t0 = time.perf_counter()
        steps, samples = self.shared.node_steps(), self.shared.node_samples()
        snap = self.shared.snapshot()
        payload = snap - self.last
        payload[self.param_count :] = snap[self.param_count :]  # buffers: values, not deltas
        self.seq += 1
        self._last_push = time.monotonic()
        self._sent = (snap, steps, samples, t0)
        self._pending = self.client.push_async(
            self.node,
            self.seq,
            payload,
            self.version,
            steps - self.synced_steps,
            samples - self.synced_samples,
            self.last,
            self.param_count,
        )
        self.stats.sync_seconds += time.perf_counter() - t0

    def _complete(self, reply: PushReply) -> None:
        assert self._pending is not None and self._sent is not None
        t0 = time.perf_counter()
        delay = 0.001
        try:
            while not reply.accepted:  # stale-synchronous: the whole node waits
                self.stats.refused += 1
                self.shared.hold = True
                time.sleep(delay)
                self.stats.wait_seconds += delay
                delay = min(delay * 2, 0.02)
                reply = self.client.push(*self._pending.args, self.last, self.param_count)
        finally:
            self.shared.hold = False
        snap, steps, samples, _ = self._sent
        # Lock-free: keep the steps the node's workers took while the push was in flight.
        self._fold(reply.weights - snap)
        self.last = reply.weights
        self.version = reply.version
        self.synced_steps, self.synced_samples, self.pulled_steps = steps, samples, steps
        self.stats.pushes += 1
        if not reply.duplicate:
            self.stats.staleness[reply.staleness] += 1
        self._pending = self._sent = None
        self.stats.sync_seconds += time.perf_counter() - t0

    def push(self) -> None:
        """Push the node's update now and wait for the reply (finishing any push in flight)."""
        self.flush()
        self._start()
        self.flush()

    def flush(self) -> None:
        """Wait for the push in flight, if any, and apply its reply."""
        if self._pending is not None:
            t0 = time.perf_counter()
            reply = self._pending.wait()
            self.stats.sync_seconds += time.perf_counter() - t0
            self._complete(reply)

    def pull(self) -> None:
        """Fold the global weights into the shared buffer, keeping the node's unsent update."""
        t0 = time.perf_counter()
        steps = self.shared.node_steps()
        weights, version = self.client.pull(self.node)
        self._fold(weights - self.last)
        self.last, self.version, self.pulled_steps = weights, version, steps
        self.stats.pulls += 1
        self.stats.sync_seconds += time.perf_counter() - t0

    def _fold(self, delta: np.ndarray) -> None:
        if self.fold:
            self.shared.flat += delta  # type: ignore[union-attr]

    def finish(self, poll: float = 0.002) -> None:
        """Keep syncing until every worker of the node is done, push the rest, leave.

        When the round is stopped (:attr:`SharedParams.stop`), a worker that died never marks
        itself done: the rest is pushed once the live workers have left, or after
        ``STOP_GRACE_SECONDS``.
        """
        grace: float | None = None
        while not self.shared.all_done():
            if self.shared.stop:
                grace = grace or time.monotonic() + self.STOP_GRACE_SECONDS
                if time.monotonic() > grace:
                    break
            self.maybe_sync()
            time.sleep(poll)
        self.flush()
        if self.shared.node_steps() > self.synced_steps:
            self.push()
        self.client.leave(self.node)


__all__ = ["ModelWeights", "NodeSlot", "NodeSync", "SyncStats"]
