"""What the job queue answers its workers: frozen, picklable messages, one type per meaning.

They cross a pipe (the local executor's forked workers) and Ray actor calls (the Ray
executor) unchanged, and the worker loop (:mod:`raynn.kfold.workers`) decodes them by type.

* :meth:`~raynn.kfold.queue.JobQueue.lease` answers a :class:`Grant` (a job to train, on
  these cores), a :class:`Batch` (several short jobs, one after another on the same cores: a
  prefetch), :class:`Wait` (jobs are pending but their cores are busy: ask again after
  ``seconds``) or :class:`Retire` (nothing pending fits this worker: stop).
* :meth:`~raynn.kfold.queue.JobQueue.progress` answers after each epoch: :class:`Continue`
  (train on), :class:`Widen` (tail widening: train the next epochs on these, more, cores) or
  :class:`Stop` (fold racing raced the job's configuration out: stop it, ``reason`` is its
  row's error).
* The worker tells the queue how each job ended with an :class:`Outcome`
  (:meth:`~raynn.kfold.queue.JobQueue.finish`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from raynn.kfold.grid import Job


@dataclass(frozen=True)
class Grant:
    """A lease as the worker sees it: the job, its attempt, and the cores to pin to."""

    job: Job
    attempt: int
    queue_wait: float  # seconds since the queue was created
    cores: tuple[int, ...]  # empty for a worker that registered no cores


@dataclass(frozen=True)
class Batch:
    """A prefetch: several short jobs for one worker, each run on the same cores, one after
    another; the worker hands their results over together, with the next lease."""

    grants: tuple[Grant, ...]


@dataclass(frozen=True)
class Wait:
    """Jobs are pending but none fits the free cores now: ask again after ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class Retire:
    """Nothing pending could run on this worker: it stops (its cores stay free)."""


@dataclass(frozen=True)
class Continue:
    """The job trains on, on the cores it holds."""


@dataclass(frozen=True)
class Widen:
    """Tail widening: the job trains its next epochs on ``cores`` (its old ones and more)."""

    cores: tuple[int, ...]


@dataclass(frozen=True)
class Stop:
    """Fold racing raced the job's configuration out: the worker stops it at this epoch
    boundary; ``reason`` is what its ``raced_out`` row's ``error`` says."""

    reason: str


class Outcome(NamedTuple):
    """How a leased job ended, as its worker tells the queue.

    ``ok`` (with ``metrics``), failed with ``error``, or ``raced_out`` (stopped by fold
    racing; ``error`` says why). ``epochs``: the epochs it trained, the last of which no
    ``progress`` call reported (the queue records it with the outcome); ``seconds``: its own
    wall seconds (0: unknown, the queue counts from its lease).
    """

    job_id: str
    ok: bool = True
    error: str | None = None
    metrics: dict[str, float] | None = None
    raced_out: bool = False
    epochs: int = 0
    seconds: float = 0.0


LeaseAnswer = Grant | Batch | Wait | Retire
ProgressAnswer = Continue | Widen | Stop
