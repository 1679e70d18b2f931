"""Plain records of a job's outcome: no torch, so light processes (the collector) load fast."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raynn.grid import Job


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


@dataclass
class JobResult:
    """The outcome of one job (a row of the ``jobs/`` table) and its epoch history."""

    job_id: str
    model: str
    scheduler: str
    fold: int
    seed: int
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
    params: int = 0
    affinity: list[int] = field(default_factory=list)
    thread_pools: list[str] = field(default_factory=list)
    history: list[EpochRecord] = field(default_factory=list)
    # the trained model's file (``output.keep_models``): written by the collector, no row
    model_state: bytes | None = field(default=None, repr=False)

    def row(self) -> dict[str, Any]:
        """The ``jobs/`` table row (everything but the history and the model)."""
        out = asdict(self)
        out.pop("history")
        out.pop("model_state")
        return out

    @classmethod
    def failed(cls, job: Job, error: str, attempt: int = 1) -> JobResult:
        """A failed result for a job that did not return one itself."""
        now = time.time()
        return cls(
            job.job_id,
            job.model.label,
            job.scheduler.label,
            job.fold,
            job.seed,
            status="failed",
            error=error,
            attempt=attempt,
            start_time=now,
            end_time=now,
        )
