"""joblib tasks as raynn's queue sees them: pending -> leased -> done / failed, bounded retries.

A plain class, like :class:`raynn.kfold.queue.JobQueue`, with the same semantics: a worker
leases the next pending task, a task whose worker dies goes back to the front of the queue
until it has used ``max_attempts`` attempts, and a task that raises fails at once (its error
is the caller's, not the worker's: retrying would raise it again). It is not JobQueue itself:
JobQueue holds a fixed list of K-fold ``Job`` records (model, training, fold, cost) known
when the run starts, and its core map, lease expiry and tail widening read their epochs;
joblib submits opaque callables one batch at a time while earlier ones run, with no epochs
to report. Thread-safe: joblib submits from its own thread while the pool's loop leases.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from raynn.errors import RaynnError


class BackendOptionError(RaynnError, ValueError):
    """A bad option of the ``raynn`` joblib backend (also a ValueError, as joblib's own are)."""


class TaskLostError(RaynnError):
    """A joblib task whose worker died on every attempt it was given."""


@dataclass
class Task:
    """One joblib batch: its id, the callable (or a Ray ref to it) and its attempts so far."""

    task_id: int
    func: Any
    attempts: int = 0
    submitted: float = field(default_factory=time.time)


@dataclass
class TaskRecord:
    """One attempt of a task as it ran: where, pinned to what, with how many threads, how long.

    ``status``: ``ok``, ``error`` (the task raised) or ``worker_lost`` (its worker died).
    ``cpus``: the worker's core group; ``affinity``: the union of every thread's mask in the
    worker process while the task ran; ``torch_threads``: ``torch.get_num_threads()`` there.
    """

    task_id: int
    attempt: int
    worker: str
    status: str
    node: str = ""
    pid: int = 0
    cpus: list[int] = field(default_factory=list)
    affinity: list[int] = field(default_factory=list)
    torch_threads: int = 0
    thread_pools: list[str] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    error: str = ""

    @property
    def seconds(self) -> float:
        """How long the attempt ran (0 for a lost one whose start is not known)."""
        return max(self.end - self.start, 0.0) if self.start else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (with ``seconds``)."""
        return {**asdict(self), "seconds": self.seconds}


class TaskQueue:
    """Tasks in submission order; see the module docstring."""

    def __init__(self, max_attempts: int = 3) -> None:
        self.max_attempts = max_attempts
        self._pending: deque[Task] = deque()
        self._leases: dict[int, tuple[Task, str]] = {}  # task id -> (task, worker)
        self._done: set[int] = set()
        self._failed: dict[int, str] = {}
        self._next = 0
        self._lock = threading.Lock()

    def add(self, func: Any) -> Task:
        """Queue ``func``; returns its task."""
        with self._lock:
            task = Task(self._next, func)
            self._next += 1
            self._pending.append(task)
            return task

    def lease(self, worker: str) -> Task | None:
        """The next pending task for ``worker`` (its ``attempts`` counts this one), or None."""
        with self._lock:
            if not self._pending:
                return None
            task = self._pending.popleft()
            task.attempts += 1
            self._leases[task.task_id] = (task, worker)
            return task

    def complete(self, task_id: int, ok: bool = True, error: str = "") -> None:
        """The leased task ended: ``ok`` or failed with ``error`` (not retried)."""
        with self._lock:
            self._leases.pop(task_id, None)
            if ok:
                self._done.add(task_id)
            else:
                self._failed[task_id] = error or "failed"

    def release_worker(self, worker: str, reason: str = "worker died") -> list[Task]:
        """Return the leases of a dead worker to the front of the queue.

        Returns the tasks that had used up their attempts and were marked failed instead.
        """
        exhausted = []
        with self._lock:
            for task_id, (task, holder) in list(self._leases.items()):
                if holder != worker:
                    continue
                del self._leases[task_id]
                if task.attempts >= self.max_attempts:
                    self._failed[task_id] = (
                        f"{reason} on attempt {task.attempts} (max_attempts reached)"
                    )
                    exhausted.append(task)
                else:
                    self._pending.appendleft(task)
        return exhausted

    def cancel_pending(self) -> list[Task]:
        """Drop every pending task (joblib aborts the call); returns them."""
        with self._lock:
            dropped = list(self._pending)
            self._pending.clear()
            for task in dropped:
                self._failed[task.task_id] = "cancelled"
            return dropped

    def counts(self) -> dict[str, int]:
        """``pending``, ``running``, ``done`` and ``failed`` task counts."""
        with self._lock:
            return {
                "pending": len(self._pending),
                "running": len(self._leases),
                "done": len(self._done),
                "failed": len(self._failed),
            }


@dataclass
class RunSummary:
    """What one ``parallel_backend("raynn")`` context ran (:func:`raynn.joblib.last_run`).

    Attributes:
        cores_per_task: each worker's core group size (its thread cap).
        workers: worker actors started (replacements of dead ones included).
        slots: core groups the workers ran on (the most tasks that run at once).
        started_ray: whether the backend started (and stopped) an embedded Ray.
        startup_seconds: from the first Parallel call to every worker up (Ray start included).
        records: every attempt of every task (:class:`TaskRecord`).
        utilization: the driver node's per-core samples
            (:class:`raynn.placement.monitor.UtilizationSampler` rows).
    """

    cores_per_task: int
    workers: int = 0
    slots: int = 0
    started_ray: bool = False
    startup_seconds: float = 0.0
    records: list[TaskRecord] = field(default_factory=list)
    utilization: list[dict[str, Any]] = field(default_factory=list)

    @property
    def retries(self) -> int:
        """Attempts lost to dead workers (each was retried, or failed the call)."""
        return sum(r.status == "worker_lost" for r in self.records)

    def cpu_percent(self, own: bool = False) -> float | None:
        """Mean CPU % over the sampled cores (``own``: the workers' share only)."""
        key = "own_percent" if own else "percent"
        values = [r[key] for r in self.utilization if r.get(key) is not None]
        return sum(values) / len(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the counts, the records and the mean utilisation."""
        return {
            "cores_per_task": self.cores_per_task,
            "workers": self.workers,
            "slots": self.slots,
            "started_ray": self.started_ray,
            "startup_seconds": self.startup_seconds,
            "retries": self.retries,
            "cpu_percent": self.cpu_percent(),
            "records": [r.to_dict() for r in self.records],
        }
