"""One HOGWILD worker of a node, and the rows a worker reports.

A :class:`HogwildWorker` is pinned to one core with one thread; its model's tensors are views
into the node's :class:`~raynn.hogwild.shared_params.SharedParams`, so its optimizer steps go
straight into the weights every worker of the node reads. No locks. The node's first worker
also runs the node's sync role (:class:`~raynn.hogwild.node_sync.NodeSync`). A plain class;
the round wraps it with ``ray.remote`` at the edge and gives it a
:class:`~raynn.hogwild.context.WorkerContext`, the data and the starting weights.
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any

import numpy as np
import torch

from raynn.core.data import ArrayDataset
from raynn.core.optim import make_optimizer, make_schedule
from raynn.errors import TrainingError
from raynn.hogwild.client import ServerClient
from raynn.hogwild.context import WorkerContext
from raynn.hogwild.loop import (
    Hooks,
    LoopStats,
    TrainContext,
    build,
    epoch_shard,
    make_loss,
    sgd_step,
    train,
)
from raynn.hogwild.node_sync import NodeSync, SyncStats
from raynn.hogwild.protocol import staleness_summary
from raynn.hogwild.rows import WorkerRow
from raynn.hogwild.shared_params import SharedParams, param_numel
from raynn.placement.cores import pin_current_process
from raynn.placement.monitor import UtilizationSampler


class HogwildWorker:
    """One HOGWILD worker: pinned to one core, training on the node's shared weights.

    Args:
        context: where it runs, the spec, its node's segment, the server
            (:class:`~raynn.hogwild.context.WorkerContext`).
        data: the dataset.
        initial: the weights the segment started from (the server's at ``context.version``).
    """

    def __init__(self, context: WorkerContext, data: ArrayDataset, initial: np.ndarray) -> None:
        c = self.context = context
        core = c.core
        self.threads = pin_current_process((core,)) if core is not None else torch.get_num_threads()
        self.worker_id, self.node, self.slot, self.core = c.worker_id, c.node, c.slot, core
        self.index, self.workers = c.index, c.workers
        self.spec, self.data, self.start_epoch = c.spec, data, c.start_epoch
        self.shared = SharedParams.attach(c.segment)
        if self.shared.numel != initial.size or self.shared.slots != c.slots:
            raise TrainingError(
                f"shared-memory segment {c.segment} holds {self.shared.numel} values x "
                f"{self.shared.slots} slots, expected {initial.size} x {c.slots}"
            )
        spec = c.spec
        self.model = self.shared.bind(build(spec, data))
        torch.manual_seed(spec.seed * 7919 + c.index + 1)  # dropout etc.: differs per worker
        self.opt = make_optimizer(spec, self.model)
        self.loss = make_loss(spec, data)
        per_epoch = math.ceil(len(data.y_train) / c.workers / spec.training.batch_size)
        self.schedule = make_schedule(spec, self.opt, per_epoch)
        self.sync: NodeSync | None = None
        self.sampler: UtilizationSampler | None = None
        if c.slot == 0:
            self.sync = self._sync_role(initial)
            self.sampler = UtilizationSampler(c.node, spec.hogwild.sample_interval)

    def _sync_role(self, initial: np.ndarray) -> NodeSync:
        """The node's link to the server: pushes every ``hogwild.push_every`` node steps, or
        only every ``hogwild.checkpoint_seconds`` on a solo node."""
        c, h = self.context, self.context.spec.hogwild
        client = ServerClient(c.shards, c.bounds)
        count = param_numel(self.model)
        if c.solo:
            every, pull, seconds = None, 0, h.checkpoint_seconds or None
        else:
            every, pull, seconds = h.push_every, h.pull_every, None
        return NodeSync(
            c.node, self.shared, client, initial, c.version, every, pull, count, seconds
        )

    def pid(self) -> int:
        """This worker's process id."""
        return os.getpid()

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
        norm, loss_fn = self.data.normalizer(), self.loss
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

    def run(self, node_pids: list[int] | None = None) -> dict[str, Any]:
        """Train every epoch; the sync role then finishes the node. Returns the worker's row.

        ``node_pids``: the processes of this node's workers; the sync role's sampler counts
        their CPU time as raynn's own (``own_percent``).
        """
        start = time.time()
        if self.sampler is not None:
            for pid in node_pids or ():
                self.sampler.watch(pid)
            self.sampler.start()
        try:
            stats = train(
                TrainContext.of(
                    self.spec,
                    self.model,
                    self.opt,
                    self.schedule,
                    self.data,
                    worker=self.index,
                    workers=self.workers,
                    start_epoch=self.start_epoch,
                    label=f"worker {self.worker_id}",
                    loss_fn=self.loss,
                ),
                [
                    Hooks(
                        before_step=self._before, after_step=self._after, should_stop=self._stopped
                    )
                ],
            )
        finally:
            self.shared.mark_done(self.slot)
        if self.sync is not None:
            self.sync.finish()
        util = utilization_rows(self.sampler) if self.sampler is not None else []
        row = worker_row(
            worker=self.worker_id,
            node=self.node,
            slot=self.slot,
            role=self.context.role,
            core=self.core,
            threads=self.threads,
            start=start,
            stats=stats,
            sync=self.sync.stats if self.sync is not None else None,
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
            rows.append(
                {
                    "node": sampler.node,
                    "time": now,
                    "core": core,
                    "percent": pct,
                    "own_percent": None,
                }
            )
    return rows


def worker_row(
    *,
    worker: str,
    node: str,
    slot: int,
    role: str,
    core: int | None,
    threads: int,
    start: float,
    stats: LoopStats | None = None,
    sync: SyncStats | None = None,
    status: str = "ok",
    error: str | None = None,
) -> dict[str, Any]:
    """A ``hogwild/`` table row as a dict (:class:`~raynn.hogwild.rows.WorkerRow`) of the
    worker ``worker`` (``core`` None: not pinned) whose training began at ``start`` (Unix
    seconds) and ends now; ``stats``: what its loop did, ``sync``: what its node's sync role
    did (None: nothing, or none)."""
    stats = stats or LoopStats()
    sync = sync or SyncStats()
    hist = [0] * (max(sync.staleness, default=-1) + 1)
    for k, v in sync.staleness.items():
        hist[k] = v
    summary = staleness_summary(dict(sync.staleness))
    return WorkerRow(
        worker=worker,
        node=node,
        slot=slot,
        role=role,
        core=-1 if core is None else core,
        threads=threads,
        status=status,
        error=error,
        epochs=stats.epochs,
        steps=stats.steps,
        samples=stats.samples,
        seconds=stats.seconds,
        samples_per_second=stats.samples / stats.seconds if stats.seconds > 0 else 0.0,
        loss=stats.loss,
        accuracy=stats.accuracy,
        hold_seconds=stats.hold_seconds,
        pushes=sync.pushes,
        pulls=sync.pulls,
        refused=sync.refused,
        wait_seconds=sync.wait_seconds,
        sync_seconds=sync.sync_seconds,
        staleness_mean=summary["mean"],
        staleness_max=summary["max"],
        staleness_p50=summary["p50"],
        staleness_p95=summary["p95"],
        staleness_hist=hist,
        start_time=start,
        end_time=time.time(),
    ).row()


__all__ = ["HogwildWorker", "utilization_rows", "worker_row"]
