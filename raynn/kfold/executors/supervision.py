"""What the K-fold executors tell their worker group (:mod:`raynn.placement.group`).

The local and Ray runs differ in where the queue and the collector live (plain objects in the
driver, or actors); :func:`~raynn.kfold.workers.call` hides that, so one function each
answers the group for both: what a dead worker's jobs become (:func:`jobs_lost`) and which
workers are stuck (:func:`stuck_workers`).
"""

from __future__ import annotations

from typing import Any

from raynn.kfold.rows import JobResult
from raynn.kfold.workers import call


def jobs_lost(queue: Any, collector: Any, worker_id: str) -> bool:
    """``worker_id`` died: its leases go back to the queue (the retries resume from their
    checkpoints), the jobs that used up their attempts are written as failed. Returns
    whether jobs are pending (a replacement has work)."""
    for job, attempt in call(queue, "release_worker", worker_id):
        failed = JobResult.failed(
            job, f"worker died on attempt {attempt} (max_attempts reached)", attempt
        )
        call(collector, "write_job", failed)
    return bool(call(queue, "stats").pending)


def stuck_workers(queue: Any) -> list[tuple[str, str]]:
    """The workers whose lease expired, each with the line to log: the group kills them and
    their deaths re-queue the jobs."""
    return [
        (
            worker_id,
            f"job {job_id}: no progress for {idle:.0f} s; killing its worker {worker_id}, "
            "the job runs again",
        )
        for job_id, worker_id, idle in call(queue, "expired")
    ]
