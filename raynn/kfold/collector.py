"""The K-fold results collector: writes a run directory's job and epoch rows, utilisation
samples, checkpoints and kept models. A plain class; Ray wraps it as an actor on the
driver's node."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raynn.kfold.rows import FINAL, JobResult
from raynn.kfold.tables import EPOCHS_SCHEMA, JOBS_SCHEMA, search_schema
from raynn.runs.files import (
    CheckpointDir,
    file_stem,
    read_bytes,
    remove_file,
    safe_name,
    write_bytes,
)
from raynn.runs.results import UTILIZATION_SCHEMA, write_table


def _status_on_disk(path: Path) -> str | None:
    """The status in a job's row file, or None (no file, or one that cannot be read)."""
    try:
        table = pq.read_table(pa.BufferReader(read_bytes(path)), columns=["status"])
        column = table.column("status").to_pylist()
    except (OSError, pa.ArrowException):
        return None
    return column[0] if column else None


class ResultsCollector:
    """Writes one run directory. A plain class; Ray wraps it as an actor on the driver's node."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.checkpoints = CheckpointDir(run_dir)

    def write_job(self, result: JobResult) -> None:
        """Write (or replace) the job's row and its epoch rows; drop its checkpoint if done.

        Idempotent, and an ok row is final: a later result of the same job that is not ok
        (an attempt that ran again after its row was written) leaves the ok row and its epochs.
        """
        name = file_stem(result.job_id)
        row = self.run_dir / "jobs" / f"{name}.parquet"
        if result.status != "ok" and _status_on_disk(row) == "ok":
            return
        if result.model_state is not None and result.status == "ok":  # before its row
            write_bytes(self.run_dir / "models" / f"{name}.pt", result.model_state)
        same = {"config": result.config, **result.search_cells()}
        write_table(
            self.run_dir / "epochs" / f"{name}.parquet",
            [{**vars(r), **same} for r in result.history],
            search_schema(EPOCHS_SCHEMA, result.columns),
        )
        write_table(row, [result.row()], search_schema(JOBS_SCHEMA, result.columns))
        legacy = safe_name(result.job_id)  # a schema-2 run's name for the same job (unbounded:
        if legacy != name:  # one too long to be a file name is no file, see remove_file)
            for table in ("jobs", "epochs"):
                remove_file(self.run_dir / table / f"{legacy}.parquet")
        if result.status in FINAL:  # done, or raced out: never resumed
            self.checkpoints.drop(result.job_id)

    def write_utilization(self, node: str, rows: list[dict[str, Any]]) -> None:
        """Write (or replace) one node's utilisation samples."""
        if rows:
            path = self.run_dir / "utilization" / f"{file_stem(node)}.parquet"
            write_table(path, rows, UTILIZATION_SCHEMA)

    def save_checkpoint(self, job_id: str, blob: bytes) -> None:
        """Store a job's latest checkpoint bytes."""
        self.checkpoints.save_checkpoint(job_id, blob)

    def load_checkpoint(self, job_id: str) -> bytes | None:
        """The job's latest checkpoint bytes, or None."""
        return self.checkpoints.load_checkpoint(job_id)

    def set_aside_checkpoint(self, job_id: str) -> str | None:
        """Move a job's checkpoint that cannot be loaded under ``damaged/``; its new path."""
        return self.checkpoints.set_aside(job_id)

    def node(self) -> str:
        """The host this collector writes on."""
        return socket.gethostname()
