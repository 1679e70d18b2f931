"""The worker loop: lease a job (after short ones, a batch), train it, hand it over with the
next lease, until the queue is empty.

:class:`CoreGroupWorker` is a plain class, run in three places with the same loop: in the
driver (the serial executor: queue and collector are plain objects), in a process forked on
this machine (the local executor: they are proxies over a pipe to the driver) and in a Ray
actor (they are actor handles). :func:`call` hides that difference. What a worker is given
(its name, cores, node, queue, collector) is one :class:`WorkerContext`, besides the data.

The queue answers with the typed messages of :mod:`raynn.kfold.messages`, which the loop
decodes by type: a lease is a ``Grant`` (train it), ``Wait`` (cores busy: ask again) or
``Retire`` (stop), or a ``Batch`` of grants (train each in turn); an epoch end but the last
(whose end goes with the result) is answered ``Continue``, ``Widen`` (re-pin onto more
cores) or ``Stop`` (fold racing: the job stops here, its row says why).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from raynn.core.checkpoint import CheckpointStore
from raynn.core.data import ArrayDataset
from raynn.errors import OutputError
from raynn.kfold.handover import handover_for, want_after
from raynn.kfold.messages import Batch, Grant, Retire, Stop, Wait, Widen
from raynn.kfold.racing import RacedOut
from raynn.kfold.rows import RACED_OUT
from raynn.kfold.train import JobResult, train_job
from raynn.placement.cores import affinity_in_force, pin_current_process, thread_pools

HEARTBEAT_SECONDS = 1.0  # a training job tells the queue it is alive at most this often


def call(target: Any, method: str, *args: Any, wait: bool = True) -> Any:
    """Call ``target.method(*args)`` on a plain object or a Ray actor handle."""
    fn = getattr(target, method)
    remote = getattr(fn, "remote", None)
    if remote is None:
        return fn(*args)
    ref = remote(*args)
    if not wait:
        return None
    import ray

    return ray.get(ref)


class _CollectorCheckpoints:
    """Checkpoint store backed by the results collector (which may live on another node)."""

    def __init__(self, collector: Any) -> None:
        self._collector = collector

    def load_checkpoint(self, job_id: str) -> bytes | None:
        return call(self._collector, "load_checkpoint", job_id)

    def save_checkpoint(self, job_id: str, blob: bytes) -> None:
        call(self._collector, "save_checkpoint", job_id, blob)

    def set_aside(self, job_id: str) -> str | None:
        return call(self._collector, "set_aside_checkpoint", job_id)


@dataclass(frozen=True)
class WorkerContext:
    """What a :class:`CoreGroupWorker` needs besides the data: who it is, where it runs, and
    whom it talks to.

    Args:
        worker_id: a name unique within the run.
        queue: a :class:`~raynn.kfold.queue.JobQueue`, its actor handle or a proxy.
        collector: a :class:`~raynn.kfold.collector.ResultsCollector`, its actor handle or a
            proxy.
        cores: the cores it starts pinned to, registered with the queue as its group (unit
            ids: see :mod:`raynn.placement.topology`); each job then runs on the cores its
            lease grants. Empty leaves affinity alone (the serial executor).
        node: the node name recorded in job rows (default: the host name).
        domain: the queue's name for the part of the node the cores belong to (its NUMA
            node; default: ``node``).
        unit_cpus: the CPUs of each core (unit id -> CPUs; default: each core is one CPU).
        threads: torch threads when ``cores`` is empty (default: torch's current setting).
        checkpoints: where checkpoints go (default: through the collector).
        handover: what takes a result and answers the next lease (default: the queue and
            the collector's, :func:`~raynn.kfold.handover.handover_for`).
    """

    worker_id: str
    queue: Any
    collector: Any
    cores: Sequence[int] = ()
    node: str = ""
    domain: str = ""
    unit_cpus: Mapping[int, Sequence[int]] = field(default_factory=dict)
    threads: int | None = None
    checkpoints: CheckpointStore | None = None
    handover: Any = None


class CoreGroupWorker:
    """Pulls jobs from the queue and trains each on the cores the queue grants it.

    Args:
        context: the worker's name, cores, node, queue and collector (:class:`WorkerContext`).
        data: the dataset with fold indices (on Ray, passed on its own so that Ray resolves
            its object reference).
    """

    def __init__(self, context: WorkerContext, data: ArrayDataset) -> None:
        import torch
        import torch._dynamo  # noqa: F401 - see below

        # An optimizer's first construction imports torch._dynamo: seconds of CPU, ten on a
        # loaded machine. Paid here, before the first lease, it is no part of a job's time
        # without progress (a lease deadline), nor of its measured epochs.
        self.worker_id = context.worker_id
        self.node = context.node or socket.gethostname()
        self.domain = context.domain or self.node
        self.unit_cpus = dict(context.unit_cpus or {})
        self.cores = tuple(context.cores or ())
        if self.cores:
            self.threads = pin_current_process(self._cpus(self.cores))
        else:
            if context.threads:
                torch.set_num_threads(context.threads)
            self.threads = torch.get_num_threads()
        self.data = data
        self.queue = context.queue
        self.collector = context.collector
        self.checkpoints = context.checkpoints or _CollectorCheckpoints(context.collector)
        self.handover = context.handover or handover_for(context.queue, context.collector)
        self._pools: list[str] | None = None  # the thread pools, read again after a re-pin
        self._job: str | None = None  # the job training now (its steps renew its lease)
        self._next_beat = 0.0

    def _cpus(self, cores: Sequence[int]) -> list[int]:
        return sorted(c for u in cores for c in self.unit_cpus.get(u, (u,)))

    def ready(self) -> int:
        """The thread count; lets the driver wait until the worker is up."""
        return self.threads

    def pid(self) -> int:
        """This worker's process id (tests read its threads from /proc)."""
        return os.getpid()

    def _repin(self, cores: tuple[int, ...]) -> None:
        """Move every thread of this process onto ``cores`` (a new grant, or widening)."""
        if cores and cores != self.cores:
            self.cores, self.threads = cores, pin_current_process(self._cpus(cores))
            self._pools = None

    def _on_epoch(self, job_id: str, epoch: int, epochs: int, loss: float | None = None) -> None:
        if epoch >= epochs:  # its end goes with the result (the answer would be Continue)
            return
        if not self.cores:
            call(self.queue, "progress", job_id, epoch, loss, wait=False)
            return
        match call(self.queue, "progress", job_id, epoch, loss):
            case Stop(reason):  # fold racing raced its configuration out
                raise RacedOut(reason, epoch)
            case Widen(cores):  # tail widening: more cores from the next epoch on
                self._repin(tuple(cores))

    def _on_step(self, *_: Any) -> None:
        """After every optimizer step of this process: renew the running job's lease (at most
        every HEARTBEAT_SECONDS), so that only a job that stops stepping loses it."""
        now = time.monotonic()
        if self._job is not None and now >= self._next_beat:
            self._next_beat = now + HEARTBEAT_SECONDS
            call(self.queue, "heartbeat", self._job, self.worker_id, wait=False)

    def run(self) -> int:
        """Train leased jobs until the queue is empty; returns how many this worker ran."""
        from torch.optim.optimizer import register_optimizer_step_post_hook

        if self.cores:
            call(self.queue, "register", self.worker_id, self.domain, self.cores)
        hook = register_optimizer_step_post_hook(self._on_step)  # the lease's heartbeat
        try:
            return self._loop()
        finally:
            hook.remove()

    def _loop(self) -> int:
        count, answer = 0, call(self.queue, "lease", self.worker_id)
        while True:
            match answer:
                case Retire():
                    return count
                case Wait(seconds):  # jobs pending, but their cores are busy
                    time.sleep(seconds)
                    answer = call(self.queue, "lease", self.worker_id)
                case Grant() | Batch():  # a batch: short jobs, one after another
                    grants = answer.grants if isinstance(answer, Batch) else (answer,)
                    results = [self._run_job(grant) for grant in grants]
                    # the results, and the next lease: more jobs after short ones
                    answer = self.handover.hand_over(self.worker_id, results, want_after(results))
                    count += len(results)
                case _:
                    raise TypeError(f"the queue answered a lease with {answer!r}")

    def _run_job(self, grant: Grant) -> JobResult:
        """Train the granted job on its cores; its result, for the handover."""
        job, attempt = grant.job, grant.attempt
        self._repin(grant.cores)
        started = time.time()
        self._job, self._next_beat = job.job_id, 0.0
        try:
            result = train_job(
                job,
                self.data,
                threads=self.threads,
                checkpoints=self.checkpoints,
                on_epoch=self._on_epoch,
                attempt=attempt,
            )
        except OutputError:  # the run's output, not the job, is at fault: stop the run
            raise
        except RacedOut as stop:  # stopped at an epoch boundary: its row says why
            result = JobResult.failed(job, stop.reason, attempt, RACED_OUT, started)
            result.epochs = stop.epoch
        except Exception as exc:  # a bad job fails alone; the others go on
            result = JobResult.failed(job, f"{type(exc).__name__}: {exc}", attempt)
        finally:
            self._job = None
        result.queue_wait_seconds = grant.queue_wait
        result.node, result.worker = self.node, self.worker_id
        # what was really in force: every thread's mask, and the pools' own thread counts
        if self._pools is None:
            self._pools = thread_pools()
        result.affinity, result.thread_pools = affinity_in_force(), list(self._pools)
        return result
