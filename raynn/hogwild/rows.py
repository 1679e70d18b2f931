"""A HOGWILD run's rows: :class:`EvalRow` (a row of ``eval/``) and :class:`WorkerRow` (a row
of ``hogwild/``).

A new column is one new field here, filled where the row is built
(:class:`~raynn.hogwild.evaluator.Evaluator`, :func:`~raynn.hogwild.worker.worker_row`); the
tables' schemas are derived from these dataclasses (:mod:`raynn.hogwild.tables`). Plain
dataclasses without pyarrow: the worker actors build rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from raynn.runs.columns import Int64


@dataclass
class EvalRow:
    """The global weights' test loss and accuracy at one moment of an attempt."""

    attempt: int
    time: float  # Unix seconds
    elapsed: float  # seconds since the attempt's training started
    version: Int64  # the parameter server's version count (its incarnation left out)
    step: Int64
    samples: Int64
    epoch: float  # samples trained over the training set's size
    loss: float
    accuracy: float
    final: bool = False  # the run's final weights
    per_class_accuracy: list[float] = field(default_factory=list)  # final rows only

    def row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WorkerRow:
    """What one HOGWILD worker did in one round."""

    worker: str
    node: str
    slot: int
    role: str  # "sync" (the node's link to the server) or "worker"
    core: int  # -1: not pinned
    threads: int
    status: str = "ok"
    error: str | None = None
    epochs: int = 0
    steps: Int64 = 0
    samples: Int64 = 0
    seconds: float = 0.0
    samples_per_second: float = 0.0
    loss: float = math.nan
    accuracy: float = math.nan
    hold_seconds: float = 0.0
    pushes: Int64 = 0
    pulls: Int64 = 0
    refused: Int64 = 0
    wait_seconds: float = 0.0
    sync_seconds: float = 0.0
    staleness_mean: float = math.nan
    staleness_max: float = math.nan
    staleness_p50: float = math.nan
    staleness_p95: float = math.nan
    staleness_hist: list[Int64] = field(default_factory=list)
    start_time: float = 0.0
    end_time: float = 0.0
    round: int = 0

    def row(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["EvalRow", "WorkerRow"]
