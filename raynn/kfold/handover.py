"""Between two jobs: a worker hands its result over and takes its next lease, in one round
trip; after short jobs, it takes several at once (a prefetch: :func:`want`).

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

from collections.abc import Sequence
from typing import Any

from raynn.kfold.messages import LeaseAnswer, Outcome
from raynn.kfold.rows import RACED_OUT, JobResult

PREFETCH_SECONDS = 0.2  # a worker asks for a batch of short jobs lasting about this long
PREFETCH_MAX = 32  # jobs in one batch at most


def outcome(result: JobResult) -> Outcome:
    """What the queue hears of a result."""
    metrics = {"val_accuracy": result.val_accuracy, "val_loss": result.val_loss}
    seconds = max(result.end_time - result.start_time, 0.0)
    ok, raced_out = result.status == "ok", result.status == RACED_OUT
    return Outcome(result.job_id, ok, result.error, metrics, raced_out, result.epochs, seconds)


def want(seconds: float) -> int:
    """How many jobs a worker asks for next, after jobs of ``seconds`` each: one for jobs
    of :data:`PREFETCH_SECONDS` or longer, more for shorter ones (up to
    :data:`PREFETCH_MAX`), so that a lease's round trip is a small part of the work it
    brings."""
    return max(1, min(PREFETCH_MAX, int(PREFETCH_SECONDS / max(seconds, 1e-4))))


def want_after(results: Sequence[JobResult]) -> int:
    """:func:`want` after ``results``, by their mean wall seconds."""
    seconds = [outcome(r).seconds for r in results]
    return want(sum(seconds) / max(len(seconds), 1))


def hand_over(
    queue: Any, collector: Any, worker: str, results: Sequence[JobResult], wants: int = 1
) -> LeaseAnswer:
    """Write ``results`` (a job's, or a batch's), tell the queue their jobs ended, and lease
    up to ``wants`` jobs for ``worker``; the jobs fold racing cancelled meanwhile get their
    ``raced_out`` rows."""
    collector.write_jobs(results)
    cancelled, answer = queue.finish(worker, [outcome(r) for r in results], wants)
    collector.write_jobs([JobResult.failed(job, why, 0, RACED_OUT) for job, why in cancelled])
    return answer


class Handover:
    """:func:`hand_over` on a queue and a collector in this process."""

    def __init__(self, queue: Any, collector: Any) -> None:
        self.queue, self.collector = queue, collector

    def hand_over(self, worker: str, results: Sequence[JobResult], wants: int = 1) -> LeaseAnswer:
        """See :func:`hand_over`."""
        return hand_over(self.queue, self.collector, worker, results, wants)


class RayHandover:
    """:func:`hand_over` on a queue actor and a collector actor: the worker waits once."""

    def __init__(self, queue: Any, collector: Any) -> None:
        self.queue, self.collector = queue, collector

    def hand_over(self, worker: str, results: Sequence[JobResult], wants: int = 1) -> LeaseAnswer:
        """See :func:`hand_over`; ``finish`` runs after the write (its argument)."""
        import ray

        written = self.collector.write_jobs.remote(list(results))
        outcomes = [outcome(r) for r in results]
        finished = self.queue.finish.remote(worker, outcomes, wants, written=written)
        cancelled, answer = ray.get(finished)
        if cancelled:
            rows = [JobResult.failed(job, why, 0, RACED_OUT) for job, why in cancelled]
            ray.get(self.collector.write_jobs.remote(rows))
        return answer


def handover_for(queue: Any, collector: Any) -> Handover | RayHandover:
    """The handover for a queue and collector: actors (Ray) or plain objects."""
    if hasattr(getattr(queue, "finish", None), "remote"):
        return RayHandover(queue, collector)
    return Handover(queue, collector)
