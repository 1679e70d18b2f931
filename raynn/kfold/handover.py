"""Between two jobs: a worker hands its result over and takes its next lease, in one round
trip.

The result must be written before the queue counts the job done (a row is the only thing
``--resume`` trusts), and the next lease comes with that count. :func:`hand_over` does both
where the queue and the collector are plain objects: in the driver for the serial executor,
and for the local executor, whose forked workers send their result to the driver in one
message (:class:`Handover` over a :class:`~raynn.placement.processes.PipeProxy`). Through Ray
(:class:`RayHandover`) the write goes to the collector actor and the queue actor's
``finish`` takes the write's reference as an argument: Ray runs ``finish`` once the write is
done, and the worker waits once, for ``finish``.
"""

from __future__ import annotations

from typing import Any

from raynn.kfold.messages import LeaseAnswer
from raynn.kfold.rows import RACED_OUT, JobResult


def outcome(result: JobResult) -> tuple[str, bool, str | None, dict[str, float], bool]:
    """What the queue hears of a result: ``(job_id, ok, error, metrics, raced_out)``."""
    metrics = {"val_accuracy": result.val_accuracy, "val_loss": result.val_loss}
    return result.job_id, result.status == "ok", result.error, metrics, result.status == RACED_OUT


def hand_over(queue: Any, collector: Any, worker: str, result: JobResult) -> LeaseAnswer:
    """Write ``result``, tell the queue its job ended, and lease ``worker``'s next job; the
    jobs fold racing cancelled meanwhile get their ``raced_out`` rows."""
    collector.write_job(result)
    cancelled, answer = queue.finish(worker, *outcome(result))
    for job, reason in cancelled:
        collector.write_job(JobResult.failed(job, reason, 0, RACED_OUT))
    return answer


class Handover:
    """:func:`hand_over` on a queue and a collector in this process."""

    def __init__(self, queue: Any, collector: Any) -> None:
        self.queue, self.collector = queue, collector

    def hand_over(self, worker: str, result: JobResult) -> LeaseAnswer:
        """See :func:`hand_over`."""
        return hand_over(self.queue, self.collector, worker, result)


class RayHandover:
    """:func:`hand_over` on a queue actor and a collector actor: the worker waits once."""

    def __init__(self, queue: Any, collector: Any) -> None:
        self.queue, self.collector = queue, collector

    def hand_over(self, worker: str, result: JobResult) -> LeaseAnswer:
        """See :func:`hand_over`; ``finish`` runs after the write (its argument)."""
        import ray

        written = self.collector.write_job.remote(result)
        finished = self.queue.finish.remote(worker, *outcome(result), written=written)
        cancelled, answer = ray.get(finished)
        rows = [JobResult.failed(job, reason, 0, RACED_OUT) for job, reason in cancelled]
        ray.get([self.collector.write_job.remote(row) for row in rows])
        return answer


def handover_for(queue: Any, collector: Any) -> Handover | RayHandover:
    """The handover for a queue and collector: actors (Ray) or plain objects."""
    if hasattr(getattr(queue, "finish", None), "remote"):
        return RayHandover(queue, collector)
    return Handover(queue, collector)
