"""The worker loop: lease a job, train it, report, repeat, until the queue is empty.

:class:`CoreGroupWorker` is a plain class. In-process (the serial executor) its queue and
collector are plain objects; under Ray it is an actor pinned to its core group and they are
actor handles. :func:`call` hides that difference, so both paths run this same loop.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Any

from raynn.data import ArrayDataset
from raynn.scheduler.cores import pin_current_process
from raynn.training import JobResult, train_job


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


class CoreGroupWorker:
    """Pulls jobs from the queue and trains each on the cores the queue grants it.

    Args:
        worker_id: a name unique within the run.
        cores: the CPUs it starts pinned to (threads = their count), registered with the
            queue as its group; each job then runs on the cores its lease grants. None leaves
            affinity alone (the serial executor).
        data: the dataset with fold indices.
        queue: a :class:`~raynn.scheduler.queue.JobQueue` or its actor handle.
        collector: a :class:`~raynn.results.ResultsCollector` or its actor handle.
        node: the node name recorded in job rows (default: the host name).
        threads: torch threads when ``cores`` is None (default: torch's current setting).
    """

    def __init__(
        self,
        worker_id: str,
        cores: Sequence[int] | None,
        data: ArrayDataset,
        queue: Any,
        collector: Any,
        node: str | None = None,
        threads: int | None = None,
    ) -> None:
        import torch

        self.worker_id = worker_id
        self.node = node or socket.gethostname()
        self.cores = tuple(cores) if cores else ()
        if cores:
            self.threads = pin_current_process(cores)
        else:
            if threads:
                torch.set_num_threads(threads)
            self.threads = torch.get_num_threads()
        self.data = data
        self.queue = queue
        self.collector = collector
        self.checkpoints = _CollectorCheckpoints(collector)

    def ready(self) -> int:
        """The thread count; lets the driver wait until the worker is up."""
        return self.threads

    def _repin(self, cores: tuple[int, ...]) -> None:
        if cores and cores != self.cores:
            self.cores, self.threads = cores, pin_current_process(cores)

    def _on_epoch(self, job_id: str, epoch: int, epochs: int) -> None:
        if not self.cores:
            call(self.queue, "progress", job_id, epoch, wait=False)
            return
        wider = call(self.queue, "progress", job_id, epoch)
        if wider:  # tail widening: more cores from the next epoch on
            self._repin(tuple(wider))

    def run(self) -> int:
        """Train leased jobs until the queue is empty; returns how many this worker ran."""
        count = 0
        if self.cores:
            call(self.queue, "register", self.worker_id, self.node, self.cores)
        while (grant := call(self.queue, "lease", self.worker_id)) is not None:
            if isinstance(grant, float):  # jobs pending, but their cores are busy
                time.sleep(grant)
                continue
            job, attempt, waited, cores = grant
            self._repin(cores)
            try:
                result = train_job(
                    job,
                    self.data,
                    threads=self.threads,
                    checkpoints=self.checkpoints,
                    on_epoch=self._on_epoch,
                    attempt=attempt,
                )
            except Exception as exc:  # a bad job fails alone; the others go on
                result = JobResult.failed(job, f"{type(exc).__name__}: {exc}", attempt)
            result.queue_wait_seconds = waited
            result.node, result.worker = self.node, self.worker_id
            call(self.collector, "write_job", result)
            call(self.queue, "complete", job.job_id, result.status == "ok", result.error)
            count += 1
        return count
