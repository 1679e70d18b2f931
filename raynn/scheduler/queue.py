"""The central job queue: pending -> leased -> done / failed, with bounded retries.

A plain class (unit-testable without Ray); the Ray executor runs it as an actor. Workers pull
(``lease``); a worker that dies has its lease returned by ``release_worker`` and the job runs
again (its next attempt resumes from the last checkpoint) until ``max_attempts``.
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

    def __init__(self, jobs: Iterable[Job], max_attempts: int = 3) -> None:
        self._pending: deque[Job] = deque(jobs)
        self._jobs = {j.job_id: j for j in self._pending}
        self._attempts: dict[str, int] = {}
        self._leases: dict[str, Lease] = {}  # job_id -> lease
        self._done: dict[str, float] = {}  # job_id -> seconds
        self._failed: dict[str, str] = {}
        self.max_attempts = max_attempts
        self.created = time.time()

    def lease(self, worker: str) -> tuple[Job, int, float] | None:
        """Next job for ``worker`` as ``(job, attempt, queue_wait_seconds)``; None when empty."""
        if not self._pending:
            return None
        job = self._pending.popleft()
        attempt = self._attempts.get(job.job_id, 0) + 1
        self._attempts[job.job_id] = attempt
        now = time.time()
        self._leases[job.job_id] = Lease(job, worker, attempt, now)
        return job, attempt, now - self.created

    def progress(self, job_id: str, epoch: int) -> None:
        """A worker finished ``epoch`` of its leased job."""
        if job_id in self._leases:
            self._leases[job_id].epoch = epoch

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
