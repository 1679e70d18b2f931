"""The central job queue: pending -> leased -> done / failed, with bounded retries.

A plain class (unit-testable without Ray); the Ray executor runs it as an actor. Workers pull
(``lease``); a worker that dies has its lease returned by ``release_worker`` and the job runs
again (its next attempt resumes from the last checkpoint) until ``max_attempts``.

The queue also keeps the core map of every node: the cores its workers registered, and which
worker holds which of them. A lease grants the job its cores (``job.cores``, or the worker's
own group): the worker's group first, then the node's lowest free cores. Jobs go out longest
first; when the next one needs more cores than are free, the first pending job that fits
goes instead, and when none fits the worker waits (``lease`` returns seconds to wait) until a
running job gives its cores back. Two jobs never share a core.

With ``tail_widening``, once nothing is pending a running job asks at each epoch boundary
(``progress``) for a share of its node's free cores, up to the job's ``max_threads``.

Leases expire: a job that shows no progress for its allowance (``expired``; 10x its model's
longest epoch so far, or ``scheduling.lease_timeout``) is taken for stuck; the executor kills
its worker and the job runs again from its last checkpoint. Progress is an epoch end or a
training step: a worker's optimizer steps send a ``heartbeat`` (at most once a second), so a
job that is slow to start or to finish an epoch on a loaded machine keeps its lease, and
only one that stops stepping loses it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from raynn.kfold.grid import Job
from raynn.kfold.racing import Config, Race, config_of
from raynn.placement.progress import PendingWork, QueueStats, RunningJob
from raynn.placement.restarts import RestartPolicy

WAIT_SECONDS = 0.2  # how long a worker waits for cores before asking again
# A lease expires when its job shows no progress (no epoch end) for LEASE_FACTOR x the
# model's longest epoch seen in this run (or its probed epoch time), at least
# LEASE_MIN_SECONDS; with nothing measured, after LEASE_UNKNOWN_SECONDS.
LEASE_FACTOR = 10.0
LEASE_MIN_SECONDS = 60.0
LEASE_UNKNOWN_SECONDS = 3600.0
RECENT_WEIGHT = 0.95  # an epoch's weight in the ETA's measured costs decays this much an epoch


@dataclass
class Lease:
    """A job handed to a worker."""

    job: Job
    worker: str
    attempt: int
    leased_at: float
    epoch: int = 0
    renewed: float = 0.0  # the lease itself, then each epoch end
    beat: float = 0.0  # its last training step reported (heartbeat)
    loss: float | None = None  # validation loss of its last epoch


class Grant(NamedTuple):
    """A lease as the worker sees it: the job, its attempt, and the cores to pin to."""

    job: Job
    attempt: int
    queue_wait: float  # seconds since the queue was created
    cores: tuple[int, ...]  # empty for a worker that registered no cores


@dataclass
class _Holder:
    """A registered worker: the group it was started on, and the cores it holds now."""

    node: str
    base: tuple[int, ...]
    cores: tuple[int, ...] = ()  # nothing between jobs


class JobQueue:
    """Hands out jobs in the given order (longest expected first) and tracks their state."""

    def __init__(
        self,
        jobs: Iterable[Job],
        max_attempts: int = 3,
        tail_widening: bool = False,
        lease_timeout: float | str = "auto",
        race: Race | None = None,
    ) -> None:
        # racing: the jobs in rounds (every configuration's first fold first), so that the
        # race decides before most of a bad configuration's folds have run
        self._pending: deque[Job] = deque(Race.order(jobs) if race is not None else jobs)
        if race is not None:
            race.add(config_of(j) for j in self._pending)
        self._jobs = {j.job_id: j for j in self._pending}
        self._attempts: dict[str, int] = {}
        self._leases: dict[str, Lease] = {}  # job_id -> lease
        self._done: dict[str, float] = {}  # job_id -> seconds
        self._failed: dict[str, str] = {}
        # fold racing (raynn.kfold.racing): raced-out job -> reason; running jobs to stop at
        # their next epoch; cancelled jobs whose rows the next complete() hands back
        self.race = race
        self._raced: dict[str, str] = {}
        self._stop: dict[str, str] = {}
        self._unrecorded: list[tuple[Job, str]] = []
        self._race_out(list(race.out) if race else [])
        self.policy = RestartPolicy(max_attempts=max_attempts)  # a dead worker's job: again?
        self.tail_widening = tail_widening
        self.lease_timeout = lease_timeout
        self._epoch_seconds: dict[str, float] = {}  # model label -> longest epoch seen
        # what the progress view's ETA is computed from, recent epochs weighing most (the
        # older ones decay by RECENT_WEIGHT an epoch, so a change of load shows within tens
        # of epochs): (model label, cores) -> [seconds, epochs]; and [seconds, priors]
        self._epoch_totals: dict[tuple[str, int], list[float]] = {}
        self._measured = [0.0, 0.0]
        self._probed = bool(self._jobs) and all(j.max_threads for j in self._jobs.values())
        self._group = 0  # cores of the workers' groups (0: none registered)
        self._holders: dict[str, _Holder] = {}
        self._node_cores: dict[str, list[int]] = {}  # node -> every core registered there
        self.created = time.time()

    # -- cores ---------------------------------------------------------------------------------
    def register(self, worker: str, node: str, cores: Iterable[int]) -> None:
        """A worker pinned to ``cores`` of ``node`` is up; those cores join the node's map."""
        cores = tuple(cores)
        self._holders[worker] = _Holder(node, cores)
        self._group = max(self._group, len(cores))
        known = self._node_cores.setdefault(node, [])
        known.extend(c for c in cores if c not in known)
        known.sort()

    def free_cores(self, node: str) -> list[int]:
        """Cores of ``node`` that no worker holds now."""
        held = {c for h in self._holders.values() if h.node == node for c in h.cores}
        return [c for c in self._node_cores.get(node, []) if c not in held]

    def cores_of(self, worker: str) -> tuple[int, ...] | None:
        """The cores ``worker`` holds now (None for an unregistered worker)."""
        holder = self._holders.get(worker)
        return holder.cores if holder else None

    def _need(self, job: Job, holder: _Holder) -> int:
        return job.cores or len(holder.base)

    def _grant_cores(self, holder: _Holder, free: list[int], need: int) -> tuple[int, ...]:
        mine = [c for c in holder.base if c in free]
        others = [c for c in free if c not in mine]
        return tuple(sorted((mine + others)[:need]))

    def _widen(self, worker: str, job: Job) -> tuple[int, ...] | None:
        holder = self._holders.get(worker)
        free = self.free_cores(holder.node) if holder else []
        if not (self.tail_widening and holder and free) or self._pending:
            return None
        busy = {lease.worker for lease in self._leases.values()}
        peers = [h for w, h in self._holders.items() if w in busy and h.node == holder.node]
        fair = (sum(len(h.cores) for h in peers) + len(free)) // max(len(peers), 1)
        target = min(fair, job.max_threads or fair)
        need = target - len(holder.cores)
        if need <= 0:
            return None
        holder.cores = tuple(sorted(holder.cores + tuple(free[:need])))
        return holder.cores

    # -- jobs ----------------------------------------------------------------------------------
    def lease(self, worker: str) -> Grant | float | None:
        """The next job for ``worker``, seconds to wait for cores, or None to retire.

        A registered worker gives back the cores it held, then gets the first pending job (in
        longest-first order) whose cores are free on its node. If jobs are pending but none
        fits now, it is told to wait; if none could ever fit its node, or nothing is pending,
        it retires (None) and its cores stay free for tail widening. An unregistered worker
        (the serial executor) gets the next job with no cores.
        """
        holder = self._holders.get(worker)
        if holder is not None:
            holder.cores = ()
        if not self._pending:
            self._holders.pop(worker, None)
            return None
        if holder is None:
            job, cores = self._pending[0], ()
        else:
            capacity = len(self._node_cores.get(holder.node, ()))
            free = self.free_cores(holder.node)
            if all(self._need(j, holder) > capacity for j in self._pending):
                self._holders.pop(worker)
                return None
            job = next((j for j in self._pending if self._need(j, holder) <= len(free)), None)
            if job is None:
                return WAIT_SECONDS
            cores = holder.cores = self._grant_cores(holder, free, self._need(job, holder))
        self._pending.remove(job)
        attempt = self._attempts.get(job.job_id, 0) + 1
        self._attempts[job.job_id] = attempt
        now = time.time()
        self._leases[job.job_id] = Lease(job, worker, attempt, now, renewed=now)
        return Grant(job, attempt, now - self.created, cores)

    def progress(
        self, job_id: str, epoch: int, loss: float | None = None
    ) -> tuple[int, ...] | str | None:
        """A worker finished ``epoch`` of its leased job (``loss``: its validation loss).

        Returns the worker's new, wider core set when tail widening gives it more cores for
        the next epoch; the reason, when fold racing raced the job's configuration out and
        the job has epochs left (the worker stops it); else None.
        """
        lease = self._leases.get(job_id)
        if lease is None:
            return None
        if job_id in self._stop and epoch < lease.job.training.epochs:
            return self._stop[job_id]
        now = time.time()
        label = lease.job.model.label
        epochs = max(epoch - lease.epoch, 1)
        took = (now - lease.renewed) / epochs
        self._epoch_seconds[label] = max(self._epoch_seconds.get(label, 0.0), took)
        holder = self._holders.get(lease.worker)
        cores = len(holder.cores) if holder else 0
        total = self._epoch_totals.setdefault((label, cores), [0.0, 0.0])
        keep = RECENT_WEIGHT**epochs
        total[:] = total[0] * keep + now - lease.renewed, total[1] * keep + epochs
        prior = self._prior(lease.job, cores)
        if prior is not None:
            seconds, priors = self._measured
            self._measured[:] = seconds * keep + now - lease.renewed, priors * keep + prior * epochs
        lease.epoch, lease.renewed, lease.loss = epoch, now, loss
        if epoch >= lease.job.training.epochs:
            return None
        return self._widen(lease.worker, lease.job)

    def heartbeat(self, job_id: str, worker: str) -> None:
        """``worker`` took a training step of its leased ``job_id``: the lease is alive. A beat
        from a worker that no longer holds the job (a late one, after its death) is ignored."""
        lease = self._leases.get(job_id)
        if lease is not None and lease.worker == worker:
            lease.beat = time.time()

    def _race_out(self, configs: list[Config]) -> None:
        """Cancel the pending jobs of ``configs`` and stop their running ones."""
        reasons = {c: self.race.reason(c) for c in configs} if self.race else {}
        for job in [j for j in self._pending if config_of(j) in reasons]:
            self._pending.remove(job)
            self._raced[job.job_id] = reasons[config_of(job)]
            self._unrecorded.append((job, reasons[config_of(job)]))
        for job_id, lease in self._leases.items():
            if config_of(lease.job) in reasons:
                self._stop[job_id] = reasons[config_of(lease.job)]

    def complete(
        self, job_id: str, ok: bool = True, error: str | None = None,
        metrics: dict[str, float] | None = None, raced_out: bool = False,
    ) -> list[tuple[Job, str]]:  # fmt: skip
        """The job ended: ``ok`` (with its ``metrics``), failed with ``error`` (not retried:
        it is deterministic), or ``raced_out`` (stopped by fold racing; ``error``: why).

        Its worker's cores are free from now on. With racing on, an ok job's metric may race
        configurations out: returns the jobs cancelled since the last call, with the reason,
        for the caller to record (each gets a ``raced_out`` row)."""
        lease = self._leases.pop(job_id, None)
        self._stop.pop(job_id, None)
        seconds = time.time() - lease.leased_at if lease else 0.0
        holder = self._holders.get(lease.worker) if lease else None
        if holder is not None:
            holder.cores = ()  # free for the next lease, its own or a waiting worker's
        if raced_out:
            self._raced[job_id] = error or "raced out"
        elif ok:
            self._done[job_id] = seconds
            job = self._jobs.get(job_id)
            if self.race is not None and job is not None and metrics:
                value = metrics.get(self.race.spec.metric, float("nan"))
                self._race_out(
                    [d.config for d in self.race.record(config_of(job), job.fold, value)]
                )
        else:
            self._failed[job_id] = error or "failed"
        cancelled, self._unrecorded = self._unrecorded, []
        return cancelled

    def release_worker(self, worker: str, reason: str = "worker died") -> list[tuple[Job, int]]:
        """Return the leases of a dead worker to the queue (front, so they finish first).

        Returns the ``(job, attempt)`` pairs that have used up their attempts and were marked
        failed instead, so the caller can record them.
        """
        exhausted = []
        self._holders.pop(worker, None)  # its cores are free again
        for job_id, lease in list(self._leases.items()):
            if lease.worker != worker:
                continue
            del self._leases[job_id]
            raced = self._stop.pop(job_id, None)
            if raced is not None:  # raced out while it ran: no retry
                self._raced[job_id] = raced
                self._unrecorded.append((lease.job, raced))
            elif not self.policy.retry(lease.attempt):
                self._failed[job_id] = f"{reason} on attempt {lease.attempt} (max_attempts reached)"
                exhausted.append((lease.job, lease.attempt))
            else:
                self._pending.appendleft(lease.job)
        return exhausted

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
        """Leases whose job showed no progress (no epoch end, no training step) within its
        allowance: ``(job_id, worker, seconds since its last progress)``. The caller kills the
        worker; its death returns the job to the queue (:meth:`release_worker`)."""
        now = time.time()
        idle = [(j, x, now - max(x.renewed, x.beat)) for j, x in list(self._leases.items())]
        return [(j, x.worker, s) for j, x, s in idle if s > self.allowance(x.job)]

    def failures(self) -> dict[str, str]:
        """The jobs that failed for good, with why: ``job_id -> error``."""
        return dict(self._failed)

    def leases(self) -> dict[str, tuple[str, int, int]]:
        """Running jobs: ``job_id -> (worker, attempt, epochs done)``."""
        leases = dict(self._leases)  # a copy first: another thread may be reading this
        return {j: (lease.worker, lease.attempt, lease.epoch) for j, lease in leases.items()}

    def _prior(self, job: Job, cores: int) -> float | None:
        """The cost model's seconds (probed) or cost units per epoch of ``job`` on ``cores``."""
        if job.cost <= 0:
            return None
        threads = max(cores, 1)
        if job.max_threads:  # the probe's cost is seconds at one thread
            threads = min(threads, job.max_threads)
        return job.cost / max(job.training.epochs, 1) / threads

    def stats(self) -> QueueStats:
        """Counts, per-running-job progress and what the ETA is computed from.

        Cheap (polled twice a second): a pass over the leases and the pending jobs.
        """
        now = time.time()
        leases = list(self._leases.items())  # a copy first: another thread may be changing it
        running = []
        for job_id, lease in leases:
            holder = self._holders.get(lease.worker)
            cores = len(holder.cores) if holder else 0
            running.append(
                RunningJob(
                    job_id,
                    lease.job.model.label,
                    holder.node if holder else "",
                    cores,
                    lease.epoch,
                    lease.job.training.epochs,
                    lease.loss,
                    now - lease.leased_at,
                    now - lease.renewed,
                    self._prior(lease.job, cores),
                )
            )
        groups: dict[tuple[str, int, int], PendingWork] = {}
        for job in list(self._pending):
            cores = job.cores or self._group
            key = (job.model.label, cores, job.training.epochs)
            work = groups.get(key)
            if work is None:
                prior = self._prior(job, cores)
                groups[key] = PendingWork(key[0], cores, key[2], 1, prior)
            else:
                work.jobs += 1
        return QueueStats(
            total=len(self._jobs),
            pending=len(self._pending),
            running=len(leases),
            done=len(self._done) + len(self._raced),  # raced out: nothing left to do
            failed=len(self._failed),
            elapsed=now - self.created,
            done_seconds=list(self._done.values()),
            running_jobs=running,
            pending_work=list(groups.values()),
            epoch_seconds={k: t / n for k, (t, n) in list(self._epoch_totals.items()) if n},
            measured_seconds=self._measured[0],
            measured_prior=self._measured[1],
            prior_seconds=self._probed,
            capacity=sum(len(c) for c in list(self._node_cores.values())),
        )
