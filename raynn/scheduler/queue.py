"""The central job queue: pending -> leased -> done / failed, with bounded retries.

A plain class (unit-testable without Ray); the Ray executor runs it as an actor. Workers pull
(``lease``); a worker that dies has its lease returned by ``release_worker`` and the job runs
again (its next attempt resumes from the last checkpoint) until ``max_attempts``.

The queue also keeps the core map of every node: which worker holds which cores, and which
cores are free because their worker found the queue empty and retired. With
``tail_widening``, once nothing is pending a running job asks at each epoch boundary
(``progress``) for a share of its node's free cores, up to the job's ``max_threads``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from raynn.grid import Job


@dataclass
class Lease:
    """A job handed to a worker."""

    job: Job
    worker: str
    attempt: int
    leased_at: float
    epoch: int = 0


@dataclass
class _Holder:
    """The cores a worker holds: its own group plus any it widened onto."""

    node: str
    base: tuple[int, ...]
    cores: tuple[int, ...]


@dataclass
class QueueStats:
    """Counts for the progress view."""

    total: int
    pending: int
    running: int
    done: int
    failed: int
    elapsed: float
    done_seconds: list[float] = field(default_factory=list)
    running_progress: list[tuple[str, int, int, float]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.pending == 0 and self.running == 0


class JobQueue:
    """Hands out jobs in the given order (longest expected first) and tracks their state."""

    def __init__(
        self, jobs: Iterable[Job], max_attempts: int = 3, tail_widening: bool = False
    ) -> None:
        self._pending: deque[Job] = deque(jobs)
        self._jobs = {j.job_id: j for j in self._pending}
        self._attempts: dict[str, int] = {}
        self._leases: dict[str, Lease] = {}  # job_id -> lease
        self._done: dict[str, float] = {}  # job_id -> seconds
        self._failed: dict[str, str] = {}
        self.max_attempts = max_attempts
        self.tail_widening = tail_widening
        self._holders: dict[str, _Holder] = {}
        self._free: dict[str, list[int]] = {}  # node -> cores of retired workers
        self.created = time.time()

    # -- cores ---------------------------------------------------------------------------------
    def register(self, worker: str, node: str, cores: Iterable[int]) -> None:
        """A worker pinned to ``cores`` of ``node`` is up."""
        cores = tuple(cores)
        self._holders[worker] = _Holder(node, cores, cores)

    def _give_back(self, worker: str, keep_base: bool) -> None:
        holder = self._holders.get(worker)
        if holder is None:
            return
        extra = [c for c in holder.cores if c not in holder.base]
        back = extra if keep_base else list(holder.cores)
        self._free.setdefault(holder.node, []).extend(back)
        if keep_base:
            holder.cores = holder.base
        else:
            del self._holders[worker]

    def cores_of(self, worker: str) -> tuple[int, ...] | None:
        """The cores ``worker`` holds now (None for an unregistered worker)."""
        holder = self._holders.get(worker)
        return holder.cores if holder else None

    def _widen(self, worker: str, job: Job) -> tuple[int, ...] | None:
        holder = self._holders.get(worker)
        free = self._free.get(holder.node, []) if holder else []
        if not (self.tail_widening and holder and free) or self._pending:
            return None
        busy = {lease.worker for lease in self._leases.values()}
        peers = [h for w, h in self._holders.items() if w in busy and h.node == holder.node]
        fair = (sum(len(h.cores) for h in peers) + len(free)) // max(len(peers), 1)
        target = min(fair, job.max_threads or fair)
        need = target - len(holder.cores)
        if need <= 0:
            return None
        holder.cores += tuple(free[:need])
        self._free[holder.node] = free[need:]
        return holder.cores

    # -- jobs ----------------------------------------------------------------------------------
    def lease(self, worker: str) -> tuple[Job, int, float] | None:
        """Next job for ``worker`` as ``(job, attempt, queue_wait_seconds)``.

        None when nothing is pending: the worker retires and its cores become free.
        """
        if not self._pending:
            self._give_back(worker, keep_base=False)
            return None
        self._give_back(worker, keep_base=True)  # a widened worker starts over on its group
        job = self._pending.popleft()
        attempt = self._attempts.get(job.job_id, 0) + 1
        self._attempts[job.job_id] = attempt
        now = time.time()
        self._leases[job.job_id] = Lease(job, worker, attempt, now)
        return job, attempt, now - self.created

    def progress(self, job_id: str, epoch: int) -> tuple[int, ...] | None:
        """A worker finished ``epoch`` of its leased job.

        Returns the worker's new, wider core set when tail widening gives it more cores for
        the next epoch, else None.
        """
        lease = self._leases.get(job_id)
        if lease is None:
            return None
        lease.epoch = epoch
        if epoch >= lease.job.training.epochs:
            return None
        return self._widen(lease.worker, lease.job)

    def complete(self, job_id: str, ok: bool = True, error: str | None = None) -> None:
        """The job ended: ``ok`` or failed with ``error`` (not retried: it is deterministic)."""
        lease = self._leases.pop(job_id, None)
        seconds = time.time() - lease.leased_at if lease else 0.0
        if ok:
            self._done[job_id] = seconds
        else:
            self._failed[job_id] = error or "failed"

    def release_worker(self, worker: str, reason: str = "worker died") -> list[tuple[Job, int]]:
        """Return the leases of a dead worker to the queue (front, so they finish first).

        Returns the ``(job, attempt)`` pairs that have used up their attempts and were marked
        failed instead, so the caller can record them.
        """
        exhausted = []
        self._give_back(worker, keep_base=True)  # its group is kept for the replacement
        self._holders.pop(worker, None)
        for job_id, lease in list(self._leases.items()):
            if lease.worker != worker:
                continue
            del self._leases[job_id]
            if lease.attempt >= self.max_attempts:
                self._failed[job_id] = f"{reason} on attempt {lease.attempt} (max_attempts reached)"
                exhausted.append((lease.job, lease.attempt))
            else:
                self._pending.appendleft(lease.job)
        return exhausted

    def leases(self) -> dict[str, tuple[str, int, int]]:
        """Running jobs: ``job_id -> (worker, attempt, epochs done)``."""
        return {j: (lease.worker, lease.attempt, lease.epoch) for j, lease in self._leases.items()}

    def stats(self) -> QueueStats:
        """Counts and per-running-job progress."""
        now = time.time()
        return QueueStats(
            total=len(self._jobs),
            pending=len(self._pending),
            running=len(self._leases),
            done=len(self._done),
            failed=len(self._failed),
            elapsed=now - self.created,
            done_seconds=list(self._done.values()),
            running_progress=[
                (j, lease.epoch, lease.job.training.epochs, now - lease.leased_at)
                for j, lease in self._leases.items()
            ],
        )
