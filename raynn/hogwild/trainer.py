"""The HOGWILD training step and loop, shared by the serial baseline and the parallel workers.

* :func:`train` is the loop: each epoch the (seeded) permutation of the training set is split
  across all workers and a worker steps through its part in batches with :func:`sgd_step`.
  The serial baseline calls it with ``workers=1``; a :class:`HogwildWorker` with its index.
* :class:`HogwildWorker` is one worker of a node: pinned to one core with one thread, its
  model's tensors are views into the node's :class:`~raynn.hogwild.shared_params.SharedParams`,
  so its optimizer steps go straight into the weights every worker of the node reads. No locks.
* :class:`NodeSync` is the node's sync role, run by the node's first worker between its own
  steps: every ``push_every`` node steps it pushes the node's update to the parameter server
  and folds the returned global weights into the shared buffer.

Plain classes; the runner wraps :class:`HogwildWorker` with ``ray.remote`` at the edge.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from raynn.data import ArrayDataset, Normalizer
from raynn.errors import TrainingError
from raynn.grid import build_model
from raynn.hogwild.server import PendingPush, PushReply, ServerClient, staleness_summary
from raynn.hogwild.shared_params import SharedParams, param_numel
from raynn.hogwild.spec import HogwildSpec
from raynn.losses import Loss, build_loss
from raynn.optim import LRSchedule
from raynn.registry import OPTIMIZERS, SCHEDULERS
from raynn.scheduler.cores import pin_current_process
from raynn.scheduler.monitor import UtilizationSampler


def normalizer(data: ArrayDataset) -> Normalizer:
    """The dataset's normalisation (:meth:`raynn.data.ArrayDataset.normalizer`)."""
    return data.normalizer()


def make_loss(spec: HogwildSpec, data: ArrayDataset) -> Loss:
    """The spec's ``training.loss`` for the dataset's classes (each process builds its own)."""
    return build_loss(spec.training.loss, data.num_classes)


def build(spec: HogwildSpec, data: ArrayDataset) -> nn.Module:
    """The spec's model, initialised from the run seed (identical in every process)."""
    torch.manual_seed(spec.seed)
    return build_model(spec.model, data.in_shape, data.num_classes)


def make_optimizer(spec: HogwildSpec, model: nn.Module) -> torch.optim.Optimizer:
    """The spec's optimizer over ``model`` (each worker has its own state, e.g. momentum)."""
    if spec.optimizer.factory is not None:
        return spec.optimizer.factory(model)
    factory = OPTIMIZERS.get(spec.optimizer.name, key="optimizer.name")
    return factory(model.parameters(), **spec.optimizer.kwargs())


def make_schedule(
    spec: HogwildSpec, opt: torch.optim.Optimizer, steps_per_epoch: int
) -> LRSchedule:
    """The spec's learning-rate schedule over a worker's own epochs."""
    comp = spec.scheduler
    factory = comp.factory or SCHEDULERS.get(comp.name, key="scheduler")
    sched = factory(opt, spec.training.epochs, max(1, steps_per_epoch), **dict(comp.args))
    return sched if isinstance(sched, LRSchedule) else LRSchedule(sched)


def build_loss_default() -> Loss:
    """Plain cross-entropy (what :func:`train` uses when given no loss)."""
    from raynn.spec import Component

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
    norm = normalizer(data)
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


@dataclass
class SyncStats:
    """What a node's sync role did."""

    pushes: int = 0
    pulls: int = 0
    refused: int = 0
    wait_seconds: float = 0.0
    sync_seconds: float = 0.0
    staleness: Counter[int] = field(default_factory=Counter)


class NodeSync:
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
    """

    POLL_SECONDS = 0.002
    STOP_GRACE_SECONDS = 2.0  # a live worker leaves within one step of being stopped

    def __init__(
        self,
        node: str,
        shared: SharedParams,
        client: ServerClient,
        initial: np.ndarray,
        version: int,
        push_every: int | None,
        pull_every: int,
        param_count: int,
        push_seconds: float | None = None,
    ) -> None:
        self.node = node
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
        self.shared.flat += reply.weights - snap
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
        self.shared.flat += weights - self.last
        self.last, self.version, self.pulled_steps = weights, version, steps
        self.stats.pulls += 1
        self.stats.sync_seconds += time.perf_counter() - t0

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


class HogwildWorker:
    """One HOGWILD worker: pinned to one core, training on the node's shared weights.

    Args:
        worker_id: unique name in the run (``n<node>w<slot>``).
        node: the node's name; slot: this worker's index on the node (0 runs the sync role);
        slots: workers on the node; index: this worker's index over all nodes; workers: all
            workers of the run.
        core: the CPU to pin to (None: leave affinity and threads alone).
        spec: the run's spec; data: the dataset.
        segment: the node's shared-memory segment name (created by the driver).
        initial: the weights to start from (the server's at ``version``).
        version: the server version of ``initial``.
        shards: the server shards (actor handles or objects); bounds: their ranges.
        start_epoch: first epoch to run (resume).
        solo: this node is the run's only one and the driver's: the server's weights would
            only ever equal the node's, so the sync role pushes just every
            ``hogwild.checkpoint_seconds`` (for the server's checkpoint) and at the end, and
            the driver evaluates the shared weights directly.
    """

    def __init__(
        self,
        worker_id: str,
        node: str,
        slot: int,
        slots: int,
        index: int,
        workers: int,
        core: int | None,
        spec: HogwildSpec,
        data: ArrayDataset,
        segment: str,
        initial: np.ndarray,
        version: int,
        shards: list[Any],
        bounds: list[tuple[int, int]],
        start_epoch: int = 0,
        solo: bool = False,
    ) -> None:
        self.threads = pin_current_process((core,)) if core is not None else torch.get_num_threads()
        self.worker_id, self.node, self.slot, self.core = worker_id, node, slot, core
        self.index, self.workers = index, workers
        self.spec, self.data, self.start_epoch = spec, data, start_epoch
        self.shared = SharedParams.attach(segment)
        if self.shared.numel != initial.size or self.shared.slots != slots:
            raise TrainingError(
                f"shared-memory segment {segment} holds {self.shared.numel} values x "
                f"{self.shared.slots} slots, expected {initial.size} x {slots}"
            )
        self.model = self.shared.bind(build(spec, data))
        torch.manual_seed(spec.seed * 7919 + index + 1)  # dropout etc.: differs per worker
        self.opt = make_optimizer(spec, self.model)
        self.loss = make_loss(spec, data)
        per_epoch = math.ceil(len(data.y_train) / workers / spec.training.batch_size)
        self.schedule = make_schedule(spec, self.opt, per_epoch)
        self.sync: NodeSync | None = None
        self.sampler: UtilizationSampler | None = None
        if slot == 0:
            client = ServerClient(shards, bounds)
            count = param_numel(self.model)
            h = spec.hogwild
            if solo:
                every, pull, seconds = None, 0, h.checkpoint_seconds or None
            else:
                every, pull, seconds = h.push_every, h.pull_every, None
            self.sync = NodeSync(
                node, self.shared, client, initial, version, every, pull, count, seconds
            )
            self.sampler = UtilizationSampler(node, h.sample_interval)

    def ready(self) -> dict[str, Any]:
        """Where the worker runs: pid, host, core, threads, segment."""
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "core": self.core,
            "threads": self.threads,
            "cores": sorted(os.sched_getaffinity(0)),
            "segment": self.shared.name,
        }

    def snapshot(self) -> np.ndarray:
        """A copy of the node's shared weights as this worker sees them."""
        return self.shared.snapshot()

    def step(self, count: int = 1) -> int:
        """Take ``count`` SGD steps on this worker's first batches (no sync); for tests."""
        norm, loss_fn = normalizer(self.data), self.loss
        idx = epoch_shard(len(self.data.y_train), self.spec.seed, 0, self.index, self.workers)
        bs = self.spec.training.batch_size
        for i in range(count):
            bi = idx[(i * bs) % max(len(idx), 1) :][:bs]
            xb = norm(self.data.x_train, bi)
            sgd_step(self.model, self.opt, loss_fn, xb, torch.from_numpy(self.data.y_train[bi]))
        return count

    def _before(self, stats: LoopStats) -> None:
        if self.shared.hold:  # a stale-synchronous push of this node is waiting
            stats.hold_seconds += self.shared.wait_while_held()

    def _stopped(self) -> bool:
        return self.shared.stop

    def _after(self, stats: LoopStats) -> None:
        self.shared.record(self.slot, stats.steps, stats.samples)
        if self.sync is not None:
            self.sync.maybe_sync()

    def run(self) -> dict[str, Any]:
        """Train every epoch; the sync role then finishes the node. Returns the worker's row."""
        start = time.time()
        if self.sampler is not None:
            self.sampler.start()
        try:
            stats = train(
                self.model,
                self.opt,
                self.schedule,
                self.data,
                epochs=self.spec.training.epochs,
                batch_size=self.spec.training.batch_size,
                seed=self.spec.seed,
                worker=self.index,
                workers=self.workers,
                start_epoch=self.start_epoch,
                before_step=self._before,
                after_step=self._after,
                should_stop=self._stopped,
                label=f"worker {self.worker_id}",
                loss_fn=self.loss,
            )
        finally:
            self.shared.mark_done(self.slot)
        if self.sync is not None:
            self.sync.finish()
        util = utilization_rows(self.sampler) if self.sampler is not None else []
        row = worker_row(
            self.worker_id,
            self.node,
            self.slot,
            "sync" if self.sync is not None else "worker",
            self.core,
            self.threads,
            stats,
            self.sync.stats if self.sync is not None else None,
            start,
        )
        return {"row": row, "utilization": util, "stopped": stats.stopped}

    def close(self) -> None:
        """Unmap the segment in this process (the driver unlinks it)."""
        self.shared.close()


def utilization_rows(sampler: UtilizationSampler) -> list[dict[str, Any]]:
    """Stop ``sampler``; a run shorter than its interval still gets one sample per core."""
    rows = sampler.stop()
    if not rows:
        import psutil

        now = time.time()  # CPU % since the sampler primed psutil's counters
        for core, pct in enumerate(psutil.cpu_percent(percpu=True)):
            rows.append({"node": sampler.node, "time": now, "core": core, "percent": pct})
    return rows


def worker_row(
    worker: str,
    node: str,
    slot: int,
    role: str,
    core: int | None,
    threads: int,
    stats: LoopStats | None,
    sync: SyncStats | None,
    start: float,
    status: str = "ok",
    error: str | None = None,
) -> dict[str, Any]:
    """A ``hogwild/`` table row (see :data:`raynn.hogwild.runner.HOGWILD_SCHEMA`)."""
    stats = stats or LoopStats()
    sync = sync or SyncStats()
    hist = [0] * (max(sync.staleness, default=-1) + 1)
    for k, v in sync.staleness.items():
        hist[k] = v
    summary = staleness_summary(dict(sync.staleness))
    row: dict[str, Any] = {
        "worker": worker,
        "node": node,
        "slot": slot,
        "role": role,
        "core": -1 if core is None else core,
        "threads": threads,
        "status": status,
        "error": error,
        "epochs": stats.epochs,
        "steps": stats.steps,
        "samples": stats.samples,
        "seconds": stats.seconds,
        "samples_per_second": stats.samples / stats.seconds if stats.seconds > 0 else 0.0,
        "loss": stats.loss,
        "accuracy": stats.accuracy,
        "hold_seconds": stats.hold_seconds,
        "pushes": sync.pushes,
        "pulls": sync.pulls,
        "refused": sync.refused,
        "wait_seconds": sync.wait_seconds,
        "sync_seconds": sync.sync_seconds,
        "staleness_mean": summary["mean"],
        "staleness_max": summary["max"],
        "staleness_p50": summary["p50"],
        "staleness_p95": summary["p95"],
        "staleness_hist": hist,
        "start_time": start,
        "end_time": time.time(),
    }
    return row


__all__ = [
    "HogwildWorker",
    "LoopStats",
    "NodeSync",
    "SyncStats",
    "build",
    "epoch_shard",
    "make_optimizer",
    "make_schedule",
    "make_loss",
    "normalizer",
    "sgd_step",
    "train",
    "utilization_rows",
    "worker_row",
]
