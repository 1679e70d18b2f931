"""The run directory: ``run.json`` and Parquet tables, written atomically.

Layout of ``runs/<run-id>/`` (schema version :data:`SCHEMA_VERSION`, documented in
``docs/RESULTS.md``)::

    run.json                     spec, versions, hosts, start/end, status
    jobs/<job_id>.parquet        one row per job (JOBS_SCHEMA)
    epochs/<job_id>.parquet      one row per job and epoch (EPOCHS_SCHEMA)
    utilization/<node>.parquet   per-core CPU % over time (UTILIZATION_SCHEMA)
    checkpoints/<job_id>.ckpt    latest epoch checkpoint of unfinished jobs
    report.md                    the summary ``raynn report`` prints

Every file is written to a temporary name and renamed into place, so a crash never leaves a
half-written table; ``pandas.read_parquet(run_dir / "jobs")`` reads each table whole.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raynn.errors import OutputError
from raynn.files import CheckpointDir, atomic_write, safe_name, write_bytes, write_json
from raynn.records import JobResult

__all__ = ["write_bytes", "write_json"]  # re-exported: the run directory's writers

SCHEMA_VERSION = 2

JOBS_SCHEMA = pa.schema(
    [
        ("job_id", pa.string()),
        ("model", pa.string()),
        ("scheduler", pa.string()),
        ("fold", pa.int32()),
        ("seed", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("attempt", pa.int32()),
        ("epochs", pa.int32()),
        ("resumed_from_epoch", pa.int32()),
        ("val_loss", pa.float64()),
        ("val_accuracy", pa.float64()),
        ("test_loss", pa.float64()),
        ("test_accuracy", pa.float64()),
        ("per_class_accuracy", pa.list_(pa.float64())),
        ("train_seconds", pa.float64()),
        ("eval_seconds", pa.float64()),
        ("queue_wait_seconds", pa.float64()),
        ("start_time", pa.float64()),
        ("end_time", pa.float64()),
        ("node", pa.string()),
        ("worker", pa.string()),
        ("cores", pa.list_(pa.int32())),
        ("threads", pa.int32()),
        ("params", pa.int64()),
        ("affinity", pa.list_(pa.int32())),
        ("thread_pools", pa.list_(pa.string())),
    ]
)

EPOCHS_SCHEMA = pa.schema(
    [
        ("job_id", pa.string()),
        ("epoch", pa.int32()),
        ("loss", pa.float64()),
        ("accuracy", pa.float64()),
        ("val_loss", pa.float64()),
        ("val_accuracy", pa.float64()),
        ("lr", pa.float64()),
        ("seconds", pa.float64()),
        ("samples_per_second", pa.float64()),
        ("threads", pa.int32()),
    ]
)

UTILIZATION_SCHEMA = pa.schema(
    [
        ("node", pa.string()),
        ("time", pa.float64()),
        ("core", pa.int32()),
        ("percent", pa.float64()),
    ]
)


def write_table(path: Path, rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> None:
    """Write ``rows`` as one Parquet file with ``schema``, atomically."""
    table = pa.Table.from_pylist(list(rows), schema=schema)
    atomic_write(path, lambda fh: pq.write_table(table, fh))


class ResultsCollector:
    """Writes one run directory. A plain class; Ray wraps it as an actor on the driver's node."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.checkpoints = CheckpointDir(run_dir)

    def write_job(self, result: JobResult) -> None:
        """Write (or replace) the job's row and its epoch rows; drop its checkpoint if done."""
        name = safe_name(result.job_id)
        write_table(
            self.run_dir / "epochs" / f"{name}.parquet",
            [vars(r) for r in result.history],
            EPOCHS_SCHEMA,
        )
        write_table(self.run_dir / "jobs" / f"{name}.parquet", [result.row()], JOBS_SCHEMA)
        if result.status == "ok":
            self.checkpoints.drop(result.job_id)

    def write_utilization(self, node: str, rows: list[dict[str, Any]]) -> None:
        """Write (or replace) one node's utilisation samples."""
        if rows:
            path = self.run_dir / "utilization" / f"{safe_name(node)}.parquet"
            write_table(path, rows, UTILIZATION_SCHEMA)

    def save_checkpoint(self, job_id: str, blob: bytes) -> None:
        """Store a job's latest checkpoint bytes."""
        self.checkpoints.save_checkpoint(job_id, blob)

    def load_checkpoint(self, job_id: str) -> bytes | None:
        """The job's latest checkpoint bytes, or None."""
        return self.checkpoints.load_checkpoint(job_id)

    def node(self) -> str:
        """The host this collector writes on."""
        return socket.gethostname()


class RunLock:
    """``run.lock`` in a run directory: one live driver per run directory.

    A lock left by a driver that died (its pid is gone on this host) is taken over; a lock of
    a live driver, or of another host, is refused.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / "run.lock"

    def acquire(self) -> None:
        """Take the lock or raise OutputError naming its holder."""
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale():
                    raise OutputError(
                        f"run directory {self.path.parent} is in use by another raynn driver "
                        f"({self.path.read_text().strip()}); wait for it, or delete "
                        f"{self.path} if that driver is gone"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            except OSError as exc:
                raise OutputError(
                    f"cannot write {self.path}: {exc.strerror}; fix permissions or free space"
                ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            return
        raise OutputError(f"cannot take {self.path}; delete it if no raynn driver uses it")

    def _stale(self) -> bool:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return True  # unreadable or half-written: its writer died
        if holder.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError):
            return False
        return False

    def release(self) -> None:
        """Drop the lock (if this process holds it)."""
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass


def create_run_dir(root: str | os.PathLike[str], name: str) -> Path:
    """Create a fresh ``<root>/<name>-<timestamp>-<n>`` directory; OutputError if impossible."""
    root = Path(root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        root.mkdir(parents=True, exist_ok=True)
        for n in range(1000):
            path = (
                root / f"{safe_name(name)}-{stamp}"
                if n == 0
                else root / f"{safe_name(name)}-{stamp}-{n}"
            )
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as exc:
        raise OutputError(
            f"cannot create a run directory under {root}: {exc.strerror or exc}; choose a "
            "writable place with --output (or output.dir in the spec)"
        ) from None
    raise OutputError(f"too many runs named {name} this second under {root}; retry")


def read_table(run_dir: str | os.PathLike[str], table: str) -> Any:
    """Read one table of a run directory as a pandas DataFrame (empty if it has no rows)."""
    import pandas as pd

    path = Path(run_dir) / table
    schema = {"jobs": JOBS_SCHEMA, "epochs": EPOCHS_SCHEMA, "utilization": UTILIZATION_SCHEMA}
    if not path.is_dir() or not any(path.glob("*.parquet")):
        return schema[table].empty_table().to_pandas() if table in schema else pd.DataFrame()
    return pd.read_parquet(path)
