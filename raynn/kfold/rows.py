"""A K-fold job's rows: :class:`JobResult` (a row of ``jobs/``) and :class:`EpochRecord`
(a row of ``epochs/``).

A new column is one new field here (with its default, which failed rows carry), filled
where :func:`raynn.kfold.train.train_job` builds the result; the tables' schemas are derived
from these dataclasses (:mod:`raynn.kfold.tables`). Plain dataclasses: no torch and no
pyarrow, so the worker processes forked from the zygote stay single-threaded.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from raynn.runs.columns import Int64

if TYPE_CHECKING:
    from raynn.kfold.grid import Job


RACED_OUT = "raced_out"  # the status of a fold that fold racing cancelled or stopped
FINAL = ("ok", RACED_OUT)  # statuses a resumed run does not run again


@dataclass
class EpochRecord:
    """Metrics of one epoch of one job (a row of the ``epochs/`` table)."""

    job_id: str
    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float
    samples_per_second: float
    threads: int
    config: str = ""  # the job's configuration (the collector fills it)


@dataclass
class JobResult:
    """The outcome of one job (a row of the ``jobs/`` table) and its epoch history."""

    job_id: str
    model: str
    scheduler: str
    fold: int
    seed: Int64
    config: str = ""  # the configuration's id (raynn.spec.search); model/scheduler unsearched
    status: str = "ok"
    error: str | None = None
    attempt: int = 1
    epochs: int = 0
    resumed_from_epoch: int = 0
    val_loss: float = math.nan
    val_accuracy: float = math.nan
    test_loss: float = math.nan
    test_accuracy: float = math.nan
    per_class_accuracy: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    queue_wait_seconds: float = 0.0
    start_time: float = 0.0
    end_time: float = 0.0
    node: str = ""
    worker: str = ""
    cores: list[int] = field(default_factory=list)
    threads: int = 0
    params: Int64 = 0
    affinity: list[int] = field(default_factory=list)
    thread_pools: list[str] = field(default_factory=list)
    history: list[EpochRecord] = field(default_factory=list, metadata={"row": False})
    # the trained model's file (``output.keep_models``): written by the collector, no row
    model_state: bytes | None = field(default=None, repr=False, metadata={"row": False})
    # the searched keys' columns, (name, Arrow type, value) (``Job.columns``): a run's own
    # columns, added to the row (``search_schema``)
    columns: tuple[tuple[str, str, Any], ...] = field(default=(), metadata={"row": False})

    def row(self) -> dict[str, Any]:
        """The ``jobs/`` table row (everything but the history and the model), with the
        searched keys' columns."""
        out = asdict(self)
        row = {f.name: out[f.name] for f in fields(self) if f.metadata.get("row", True)}
        return {**row, **self.search_cells()}

    def search_cells(self) -> dict[str, Any]:
        """The searched keys' columns of this job's rows: ``{column: value}``."""
        return {name: value for name, _, value in self.columns}

    @classmethod
    def failed(
        cls, job: Job, error: str, attempt: int = 1, status: str = "failed", start: float = 0.0
    ) -> JobResult:
        """A result for a job that did not return one itself: failed with ``error``, or
        (``status=RACED_OUT``) raced out, ``error`` saying why; ``start``: when it began."""
        now = time.time()
        return cls(
            job.job_id,
            job.model.label,
            job.scheduler.label,
            job.fold,
            job.seed,
            config=job.config,
            columns=job.columns,
            status=status,
            error=error,
            attempt=attempt,
            start_time=start or now,
            end_time=now,
            train_seconds=now - start if start else 0.0,
        )
