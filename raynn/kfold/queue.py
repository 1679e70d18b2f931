"""The central job queue: pending -> leased -> done / failed, with bounded retries.

A plain class (unit-testable without Ray); the Ray executor runs it as an actor. Workers pull
(``lease``); a worker that dies has its lease returned by ``release_worker`` and the job runs
again (its next attempt resumes from the last checkpoint) until ``max_attempts``. It answers
its workers with the typed messages of :mod:`raynn.kfold.messages`: ``lease`` a
:class:`~raynn.kfold.messages.Grant`, ``Wait`` or ``Retire``; ``progress`` ``Continue``,
``Widen`` or ``Stop``.

:class:`JobQueue` holds the pending jobs, the finished and failed ones, and the retry
decision (:class:`~raynn.placement.restarts.RestartPolicy`), and composes four parts:

* :class:`~raynn.kfold.leases.LeaseBook`: the leases and attempts, and lease expiry. A job
  that shows no progress for its allowance (``expired``; 10x its model's longest epoch so
  far, or ``scheduling.lease_timeout``) is taken for stuck; the executor kills its worker
  and the job runs again from its last checkpoint. Progress is an epoch end or a training
  step: a worker's optimizer steps send a ``heartbeat`` (at most once a second), so a job
  that is slow to start or to finish an epoch on a loaded machine keeps its lease, and only
  one that stops stepping loses it.
* :class:`~raynn.kfold.core_map.CoreMap`: the core map of every node, the cores its workers
  registered and which worker holds which. A lease grants the job its cores (``job.cores``,
  or the worker's own group): the worker's group first, then the node's lowest free cores.
  Jobs go out in the given order (longest first, or the run's planned order:
  :mod:`raynn.kfold.packing`); when the next one needs more cores than are free, the first
  pending job that fits goes instead, and when none fits the worker waits (``Wait``) until
  a running job gives its cores back. Two jobs never share a core. With
  ``tail_widening``, once nothing is pending a running job gets at each epoch boundary
  (``progress``) a share of its node's free cores, up to the job's ``max_threads``.
* :class:`~raynn.kfold.race_gate.RaceGate`: fold racing's order (staggered folds) and the
  jobs it cancels (pending ones handed back for their rows, running ones told to ``Stop``).
* :class:`~raynn.kfold.queue_stats.QueueStatistics`: the measured epochs and what the
  progress view's ETA is computed from (``stats``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from raynn.kfold.core_map import CoreMap, Placed
from raynn.kfold.grid import Job
from raynn.kfold.leases import Held, LeaseBook
from raynn.kfold.messages import (
    Batch,
    Continue,
    Grant,
    LeaseAnswer,
    Outcome,
    ProgressAnswer,
    Stop,
    Widen,
)
from raynn.kfold.queue_stats import QueueStatistics
from raynn.kfold.race_gate import RaceGate
from raynn.kfold.racing import Race
from raynn.placement.progress import QueueStats
from raynn.placement.restarts import RestartPolicy


class JobQueue:
    """Hands out jobs in the given order (longest expected first, or planned) and tracks
    their state."""

    def __init__(
        self,
        jobs: Iterable[Job],
        max_attempts: int = 3,
        tail_widening: bool = False,
        lease_timeout: float | str = "auto",
        race: Race | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock  # the time now (a simulation's own: raynn.bench.scale)
        self._racing = RaceGate(race)
        self._pending: deque[Job] = deque(self._racing.order(jobs))
        self._jobs = {j.job_id: j for j in self._pending}
        self._racing.start(self._pending)  # a resumed run: configurations out before
        self._leases = LeaseBook(lease_timeout, clock)
        self._cores = CoreMap()
        self._stats = QueueStatistics(list(self._jobs.values()))
        self._failed: dict[str, str] = {}
        self.policy = RestartPolicy(max_attempts=max_attempts)  # a dead worker's job: again?
        self.tail_widening = tail_widening
        self.created = self.clock()

    # -- cores ---------------------------------------------------------------------------------
    def register(self, worker: str, node: str, cores: Iterable[int]) -> None:
        """A worker pinned to ``cores`` of ``node`` is up; those cores join the node's map."""
        self._cores.register(worker, node, cores)

    def free_cores(self, node: str) -> list[int]:
        """Cores of ``node`` that no worker holds now."""
        return self._cores.free_cores(node)

    def cores_of(self, worker: str) -> tuple[int, ...] | None:
        """The cores ``worker`` holds now (None for an unregistered worker)."""
        return self._cores.cores_of(worker)

    # -- jobs ----------------------------------------------------------------------------------
    def lease(self, worker: str, want: int = 1, longest: float | None = None) -> LeaseAnswer:
        """The next job for ``worker`` (:class:`~raynn.kfold.messages.Grant`), up to ``want``
        of them (a :class:`~raynn.kfold.messages.Batch`, a prefetch), ``Wait`` for cores, or
        ``Retire``.

        A registered worker gives back the cores it held, then gets the first pending job (in
        the queue's order) whose cores are free on its node. If jobs are pending but none
        fits now, it is told to wait; if none could ever fit its node, or nothing is pending,
        it retires and its cores stay free for tail widening. An unregistered worker (the
        serial executor) gets the next job with no cores. A batch adds the jobs that follow
        in order and need as many cores, while every registered worker could still get two
        more (so the tail is shared); they run on the first one's cores. No job of a batch
        costs more than ``longest`` (default: the first's; :meth:`finish` passes the cost of
        the jobs the worker measured when it asked): fold racing's order is not longest
        first, and a long job would keep the batch's later leases waiting past their
        deadline. With fold racing on there are no batches: the race decides on each result
        before the next lease, so a serial run races the same way every time.
        """
        placed = self._cores.place(worker, self._pending)
        if not isinstance(placed, Placed):
            return placed
        limit = placed.job.cost if longest is None else longest
        racing = self._racing.race is not None
        extra = want - 1 if placed.job.cost <= limit and not racing else 0
        jobs = [placed.job, *self._alongside(worker, placed, extra, limit)]
        grants = tuple(self._grant(job, worker, placed.cores) for job in jobs)
        return grants[0] if len(grants) == 1 else Batch(grants)

    def _alongside(self, worker: str, placed: Placed, extra: int, limit: float) -> list[Job]:
        """Up to ``extra`` pending jobs to batch with ``placed``; see :meth:`lease`."""
        share = (len(self._pending) - 1) // (2 * max(self._cores.workers(), 1))
        taken: list[Job] = []
        for job in self._pending:
            if len(taken) >= min(extra, share):
                break
            if job is placed.job:
                continue
            if self._cores.need(worker, job) != len(placed.cores) or job.cost > limit:
                break  # in order only: the next lease takes it
            taken.append(job)
        return taken

    def _grant(self, job: Job, worker: str, cores: tuple[int, ...]) -> Grant:
        self._pending.remove(job)
        now = self.clock()
        held = self._leases.open(job, worker, now)
        return Grant(job, held.attempt, now - self.created, cores)

    def progress(self, job_id: str, epoch: int, loss: float | None = None) -> ProgressAnswer:
        """A worker finished ``epoch`` of its leased job (``loss``: its validation loss).

        Answers ``Stop`` (with the reason) when fold racing raced the job's configuration out
        and the job has epochs left; ``Widen`` (the worker's new, wider cores) when tail
        widening gives it more cores for the next epoch; else ``Continue``.
        """
        held = self._leases.get(job_id)
        if held is None:
            return Continue()
        epochs = held.job.training.epochs
        reason = self._racing.stop_reason(job_id, epoch, epochs)
        if reason is not None:
            return Stop(reason)
        self._epoch_end(held, epoch, loss)
        if epoch >= epochs or not self.tail_widening or self._pending:
            return Continue()
        wider = self._cores.widen(held.worker, held.job.max_threads, self._leases.workers())
        return Widen(wider) if wider else Continue()

    def _epoch_end(self, held: Held, epoch: int, loss: float | None, seconds: float = 0) -> None:
        """``held``'s job finished ``epoch``: its lease is renewed and its epochs measured
        (from its last renewal, or ``seconds`` back when that is later: a batch's job)."""
        now = self.clock()
        began = max(held.renewed, now - seconds) if seconds > 0 else held.renewed
        cores = len(self._cores.cores_of(held.worker) or ())
        done = self._leases.renew(held, epoch, loss, now, began)
        self._stats.epochs(held.job, cores, done, began, now)

    def heartbeat(self, job_id: str, worker: str) -> None:
        """``worker`` took a training step of its leased ``job_id``: the lease is alive. A beat
        from a worker that no longer holds the job (a late one, after its death) is ignored."""
        self._leases.heartbeat(job_id, worker)

    def _running(self) -> dict[str, Job]:
        return {job_id: held.job for job_id, held in self._leases.held.items()}

    def complete(
        self, job_id: str, ok: bool = True, error: str | None = None,
        metrics: dict[str, float] | None = None, raced_out: bool = False, epochs: int = 0,
        seconds: float = 0.0,
    ) -> list[tuple[Job, str]]:  # fmt: skip
        """The job ended (the fields of :class:`~raynn.kfold.messages.Outcome`): ``ok`` (with
        its ``metrics``), failed with ``error`` (not retried: it is deterministic), or
        ``raced_out`` (stopped by fold racing; ``error``: why). An ok job's last epoch (of
        ``epochs``, ``seconds`` its wall time) is measured here: no ``progress`` reported it.

        Its worker's cores are free from now on, once it holds no other lease (a batch's). With
        racing on, an ok job's metric may race configurations out: returns the jobs cancelled
        since the last call, with the reason, for the caller to record (each gets a
        ``raced_out`` row)."""
        held = self._leases.get(job_id)
        if held is not None and ok and not raced_out and epochs > held.epoch:
            self._epoch_end(held, epochs, (metrics or {}).get("val_loss"), seconds)
        self._leases.close(job_id)
        self._racing.ended(job_id)
        if held is not None and not self._leases.holds(held.worker):
            self._cores.give_back(held.worker)  # free for the next lease, its own or another's
        if raced_out:
            self._racing.stopped(job_id, error)
        elif ok:
            self._stats.done[job_id] = seconds or (self.clock() - held.leased_at if held else 0)
            job = self._jobs.get(job_id)
            if job is not None and metrics:
                self._racing.scored(job, metrics, self._pending, self._running())
        else:
            self._failed[job_id] = error or "failed"
        return self._racing.take_cancelled()

    def finish(
        self, worker: str, outcomes: Sequence[Outcome], want: int = 1, written: object = None
    ) -> tuple[list[tuple[Job, str]], LeaseAnswer]:
        """:meth:`complete` each of ``outcomes`` (a job, or a batch's), then :meth:`lease` up
        to ``want`` jobs for the same worker, none costing more than those it completed (what
        it asked by), in one call (one round trip per lease): the jobs racing cancelled, and
        the worker's next answer. ``written`` is ignored: through Ray,
        the reference of the results' write, which Ray resolves before this runs
        (:mod:`raynn.kfold.handover`)."""
        costs = [self._jobs[o.job_id].cost for o in outcomes if o.job_id in self._jobs]
        cancelled = [c for outcome in outcomes for c in self.complete(*outcome)]
        return cancelled, self.lease(worker, want, max(costs, default=None))

    def release_worker(self, worker: str, reason: str = "worker died") -> list[tuple[Job, int]]:
        """Return the leases of a dead worker to the queue (front, so they finish first; a
        batch's in its order).

        Returns the ``(job, attempt)`` pairs that have used up their attempts and were marked
        failed instead, so the caller can record them.
        """
        exhausted = []
        self._cores.forget(worker)  # its cores are free again
        for held in reversed(self._leases.of_worker(worker)):  # each to the front: last first
            job_id = held.job.job_id
            self._leases.close(job_id)
            if self._racing.died(job_id, held.job):  # raced out while it ran: no retry
                continue
            if not self.policy.retry(held.attempt):
                self._failed[job_id] = f"{reason} on attempt {held.attempt} (max_attempts reached)"
                exhausted.append((held.job, held.attempt))
            else:
                self._pending.appendleft(held.job)
        return exhausted

    def allowance(self, job: Job) -> float:
        """Seconds ``job`` may go without progress before its lease expires."""
        return self._leases.allowance(job)

    def expired(self) -> list[tuple[str, str, float]]:
        """Leases whose job showed no progress (no epoch end, no training step) within its
        allowance: ``(job_id, worker, seconds since its last progress)``. The caller kills the
        worker; its death returns the job to the queue (:meth:`release_worker`)."""
        return self._leases.expired()

    def failures(self) -> dict[str, str]:
        """The jobs that failed for good, with why: ``job_id -> error``."""
        return dict(self._failed)

    def leases(self) -> dict[str, tuple[str, int, int]]:
        """Running jobs: ``job_id -> (worker, attempt, epochs done)``."""
        return self._leases.snapshot()

    def stats(self) -> QueueStats:
        """Counts, per-running-job progress and what the ETA is computed from.

        Cheap (polled twice a second): a pass over the leases and the pending jobs.
        """
        now = self.clock()
        held = list(self._leases.held.values())  # a copy first: another thread may change it
        costs = self._stats.costs
        return QueueStats(
            total=len(self._jobs),
            pending=len(self._pending),
            running=len(held),
            done=len(self._stats.done) + len(self._racing.raced),  # raced out: nothing to do
            failed=len(self._failed),
            elapsed=now - self.created,
            done_seconds=list(self._stats.done.values()),
            running_jobs=self._stats.running(held, self._cores, now),
            pending_work=self._stats.pending(list(self._pending), self._cores.group),
            epoch_seconds=costs.epoch_seconds(),
            measured_seconds=costs.measured_seconds,
            measured_prior=costs.measured_prior,
            prior_seconds=self._stats.probed,
            capacity=self._cores.capacity(),
        )
