"""The job queue's statistics: what its progress view and ETA are computed from
(:class:`QueueStatistics`, a part of :class:`raynn.kfold.queue.JobQueue`).

Each epoch end is measured (:class:`raynn.placement.progress.EpochCosts`, recent epochs
weighing most) against the cost model's prior for the job on its cores (:func:`prior`); the
snapshot lists each running job (node, cores, epoch, loss) and the pending jobs grouped by
model and cores (:class:`raynn.placement.progress.QueueStats`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from raynn.kfold.core_map import CoreMap
from raynn.kfold.grid import Job
from raynn.kfold.leases import Held
from raynn.placement.progress import EpochCosts, PendingWork, RunningJob


def prior(job: Job, cores: int) -> float | None:
    """The cost model's seconds (probed) or cost units per epoch of ``job`` on ``cores``."""
    if job.cost <= 0:
        return None
    threads = max(cores, 1)
    if job.max_threads:  # the probe's cost is seconds at one thread
        threads = min(threads, job.max_threads)
    return job.cost / max(job.training.epochs, 1) / threads


class QueueStatistics:
    """The measured epochs and the finished jobs' seconds; see the module docstring.

    Args:
        jobs: every job of the run (the probe measured them all: priors are seconds).
    """

    def __init__(self, jobs: Collection[Job]) -> None:
        self.costs = EpochCosts()
        self.done: dict[str, float] = {}  # job_id -> seconds from its lease to its end
        self.probed = bool(jobs) and all(j.max_threads for j in jobs)

    def epochs(self, job: Job, cores: int, epochs: int, began: float, ended: float) -> None:
        """``epochs`` of ``job`` on ``cores`` ran from ``began`` to ``ended``."""
        self.costs.record(job.model.label, cores, epochs, began, ended, prior(job, cores))

    @staticmethod
    def running(held: Iterable[Held], cores: CoreMap, now: float) -> list[RunningJob]:
        """Each running job as the progress view shows it."""
        out = []
        for lease in held:
            holder = cores.holder(lease.worker)
            n = len(holder.cores) if holder else 0
            out.append(
                RunningJob(
                    lease.job.job_id,
                    lease.job.model.label,
                    holder.node if holder else "",
                    n,
                    lease.epoch,
                    lease.job.training.epochs,
                    lease.loss,
                    now - lease.leased_at,
                    now - lease.renewed,
                    prior(lease.job, n),
                )
            )
        return out

    @staticmethod
    def pending(jobs: Iterable[Job], group: int) -> list[PendingWork]:
        """The pending ``jobs`` grouped by model, cores (``group`` for a job without its own
        count) and epochs."""
        groups: dict[tuple[str, int, int], PendingWork] = {}
        for job in jobs:
            n = job.cores or group
            key = (job.model.label, n, job.training.epochs)
            work = groups.get(key)
            if work is None:
                groups[key] = PendingWork(key[0], n, key[2], 1, prior(job, n))
            else:
                work.jobs += 1
        return list(groups.values())
