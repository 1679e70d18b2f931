"""The K-fold results collector: writes a run directory's job and epoch rows, utilisation
samples, checkpoints and kept models. A plain class; Ray wraps it as an actor on the
driver's node."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from raynn.kfold.rows import FINAL, JobResult
from raynn.kfold.tables import EPOCHS_SCHEMA, JOBS_SCHEMA, search_schema
from raynn.runs.batches import BatchedTable
from raynn.runs.files import CheckpointDir, file_stem, write_bytes
from raynn.runs.results import UTILIZATION_SCHEMA, read_table, write_table


class ResultsCollector:
    """Writes one run directory. A plain class; Ray wraps it as an actor on the driver's node.

    The job and epoch rows go through a :class:`~raynn.runs.batches.BatchedTable` each: a
    row is in the table's journal (safe from a kill) when :meth:`write_job` returns, in a
    Parquet batch every few thousand rows, and in one file per table after :meth:`close`.
    """

    def __init__(self, run_dir: str | os.PathLike[str], shared: bool = False) -> None:
        """``shared``: other processes write the same run directory at once (the bench's peers,
        a process per job or per instance): batches are neither merged nor recovered."""
        self.run_dir = Path(run_dir)
        self.checkpoints = CheckpointDir(run_dir)
        self.shared = shared
        self._tables: dict[str, BatchedTable] = {}
        self._status: dict[str, str] | None = None  # each job's status in the table

    def _table(self, name: str) -> BatchedTable:
        if name not in self._tables:
            self._tables[name] = BatchedTable(self.run_dir / name, "job_id", self.shared)
        return self._tables[name]

    def _statuses(self) -> dict[str, str]:
        if self._status is None:  # a resumed run's rows: read once
            jobs = read_table(self.run_dir, "jobs", damaged=[])
            self._status = dict(zip(jobs["job_id"], jobs["status"], strict=True))
        return self._status

    def write_job(self, result: JobResult) -> None:
        """Write (or replace) the job's row and its epoch rows; drop its checkpoint if done.

        Idempotent, and an ok row is final: a later result of the same job that is not ok
        (an attempt that ran again after its row was written) leaves the ok row and its epochs.
        """
        job_id = result.job_id
        if result.status != "ok" and self._statuses().get(job_id) == "ok":
            return
        if result.model_state is not None and result.status == "ok":  # before its row
            write_bytes(self.run_dir / "models" / f"{file_stem(job_id)}.pt", result.model_state)
        same = {"config": result.config, **result.search_cells()}
        self._table("epochs").put(
            job_id,
            [{**vars(r), **same} for r in result.history],
            search_schema(EPOCHS_SCHEMA, result.columns),
        )
        self._table("jobs").put(job_id, [result.row()], search_schema(JOBS_SCHEMA, result.columns))
        if self._status is not None:
            self._status[job_id] = result.status
        if result.status in FINAL:  # done, or raced out: never resumed
            self.checkpoints.drop(job_id)

    def write_jobs(self, results: Sequence[JobResult]) -> None:
        """:meth:`write_job` each of ``results`` (a batch's), in one call."""
        for result in results:
            self.write_job(result)

    def close(self) -> None:
        """The run's end: each table's rows in one Parquet file."""
        for table in self._tables.values():
            table.close()

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
