"""The job queue's leases: which worker holds which job on which attempt, and when a lease
expires (:class:`LeaseBook`, a part of :class:`raynn.kfold.queue.JobQueue`).

A lease is renewed by its job's progress: an epoch end (:meth:`LeaseBook.renew`) or a
training step (:meth:`LeaseBook.heartbeat`, at most once a second from the worker). A job
that shows no progress for its allowance (10x its model's longest epoch so far, at least a
minute; or ``scheduling.lease_timeout``) is taken for stuck: :meth:`LeaseBook.expired` lists
it, the executor kills its worker and the job runs again from its last checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from raynn.kfold.grid import Job

# A lease expires when its job shows no progress (no epoch end) for LEASE_FACTOR x the
# model's longest epoch seen in this run (or its probed epoch time), at least
# LEASE_MIN_SECONDS; with nothing measured, after LEASE_UNKNOWN_SECONDS.
LEASE_FACTOR = 10.0
LEASE_MIN_SECONDS = 60.0
LEASE_UNKNOWN_SECONDS = 3600.0


@dataclass
class Held:
    """A job handed to a worker: its lease."""

    job: Job
    worker: str
    attempt: int
    leased_at: float
    epoch: int = 0
    renewed: float = 0.0  # the lease itself, then each epoch end
    beat: float = 0.0  # its last training step reported (heartbeat)
    loss: float | None = None  # validation loss of its last epoch


class LeaseBook:
    """The running jobs' leases and every job's attempts so far; see the module docstring.

    Args:
        lease_timeout: seconds a job may go without progress, or ``"auto"`` (from its
            model's epochs: :meth:`allowance`).
        clock: the time now, in seconds (a simulation's own clock in ``raynn bench scale``).
    """

    def __init__(
        self, lease_timeout: float | str = "auto", clock: Callable[[], float] = time.time
    ) -> None:
        self.lease_timeout, self.clock = lease_timeout, clock
        self.held: dict[str, Held] = {}  # job_id -> its lease
        self._attempts: dict[str, int] = {}
        self._per_worker: dict[str, int] = {}  # worker -> leases it holds (a batch: several)
        self._epoch_seconds: dict[str, float] = {}  # model label -> longest epoch seen

    def __len__(self) -> int:
        return len(self.held)

    def open(self, job: Job, worker: str, now: float) -> Held:
        """``job`` goes to ``worker`` at ``now``: its next attempt."""
        attempt = self._attempts.get(job.job_id, 0) + 1
        self._attempts[job.job_id] = attempt
        held = self.held[job.job_id] = Held(job, worker, attempt, now, renewed=now)
        self._per_worker[worker] = self._per_worker.get(worker, 0) + 1
        return held

    def get(self, job_id: str) -> Held | None:
        return self.held.get(job_id)

    def close(self, job_id: str) -> Held | None:
        """The lease of ``job_id`` ends (the job ended or its worker died)."""
        held = self.held.pop(job_id, None)
        if held is not None:
            self._per_worker[held.worker] -= 1
        return held

    def holds(self, worker: str) -> bool:
        """Whether ``worker`` holds a lease (O(1); a batch's jobs are held together)."""
        return self._per_worker.get(worker, 0) > 0

    def of_worker(self, worker: str) -> list[Held]:
        """The leases ``worker`` holds."""
        return [held for held in list(self.held.values()) if held.worker == worker]

    def workers(self) -> set[str]:
        """The workers that hold a lease."""
        return {held.worker for held in self.held.values()}

    def renew(
        self, held: Held, epoch: int, loss: float | None, now: float, began: float | None = None
    ) -> int:
        """``held``'s job finished ``epoch`` at ``now`` with validation ``loss``: its lease
        is renewed and its model's longest epoch updated (those epochs ran from ``began``,
        default its last renewal). Returns the epochs since the last renewal (at least one)."""
        epochs = max(epoch - held.epoch, 1)
        took = (now - (held.renewed if began is None else began)) / epochs
        label = held.job.model.label
        self._epoch_seconds[label] = max(self._epoch_seconds.get(label, 0.0), took)
        held.epoch, held.renewed, held.loss = epoch, now, loss
        return epochs

    def heartbeat(self, job_id: str, worker: str) -> None:
        """``worker`` took a training step of ``job_id``; a beat from a worker that no longer
        holds the job (a late one, after its death) is ignored."""
        held = self.held.get(job_id)
        if held is not None and held.worker == worker:
            held.beat = self.clock()

    def allowance(self, job: Job) -> float:
        """Seconds ``job`` may go without progress before its lease expires."""
        if self.lease_timeout != "auto":
            return float(self.lease_timeout)
        seen = self._epoch_seconds.get(job.model.label)
        if seen is None and job.max_threads:  # probed: its cost is seconds at one thread
            seen = job.cost / max(job.training.epochs, 1)
        if seen is None:
            return LEASE_UNKNOWN_SECONDS
        return max(LEASE_MIN_SECONDS, LEASE_FACTOR * seen)

    def expired(self) -> list[tuple[str, str, float]]:
        """Leases whose job showed no progress within its allowance: ``(job_id, worker,
        seconds since its last progress)``."""
        now = self.clock()
        idle = [(j, x, now - max(x.renewed, x.beat)) for j, x in list(self.held.items())]
        return [(j, x.worker, s) for j, x, s in idle if s > self.allowance(x.job)]

    def snapshot(self) -> dict[str, tuple[str, int, int]]:
        """Running jobs: ``job_id -> (worker, attempt, epochs done)``."""
        held = dict(self.held)  # a copy first: another thread may be reading this
        return {j: (x.worker, x.attempt, x.epoch) for j, x in held.items()}
