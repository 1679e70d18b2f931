"""The run directory: ``run.json`` and Parquet tables, written atomically.

Layout of ``runs/<run-id>/`` (schema version :data:`SCHEMA_VERSION`, documented in
``docs/RESULTS.md``)::

    run.json                     spec, versions, hosts, start/end, status
    jobs/batch-<seq>-<pid>.parquet   one row per job (raynn.kfold.tables.JOBS_SCHEMA), in
                                 batches and a journal during a run, one file after it
                                 (raynn.runs.batches)
    epochs/batch-<seq>-<pid>.parquet one row per job and epoch (EPOCHS_SCHEMA), likewise
    utilization/<stem>.parquet   per-core CPU % over time, per node (UTILIZATION_SCHEMA)
    checkpoints/<stem>.ckpt      latest checkpoint of unfinished jobs
    models/<stem>.pt, refit.pt   trained weights (keep_models, refit; raynn.kfold.saved)
    report.md                    the summary ``raynn report`` prints
    run.lock                     held (flock) by the live driver
    damaged/                     files ``--resume`` found unreadable, set aside

``<stem>`` is :func:`raynn.runs.files.file_stem` of the job id (or node name): its readable
characters plus a short hash, so no two jobs share a file and none is hidden from readers.

Every file is written to a temporary name and renamed into place, so a crash never leaves a
half-written table; :func:`read_table` reads each table whole (each job's rows from its
newest write), and so does ``pandas.read_parquet(run_dir / "jobs")`` once the run ended.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raynn.errors import OutputError
from raynn.runs import batches
from raynn.runs.files import (
    atomic_write,
    check_no_links,
    link_error,
    open_folder,
    read_bytes,
    safe_name,
    sweep_temp_files,
    write_bytes,
    write_json,
)

__all__ = ["write_bytes", "write_json"]  # re-exported: the run directory's writers

SCHEMA_VERSION = 6

UTILIZATION_SCHEMA = pa.schema(
    [
        ("node", pa.string()),
        ("time", pa.float64()),
        ("core", pa.int32()),
        ("percent", pa.float64()),
        ("own_percent", pa.float64()),  # of that core, by raynn's processes; null: unmeasured
    ]
)


# the schema of each table by its folder name: the empty table's columns (read_table), and
# the check that a row has no column its table lacks (write_table)
TABLE_SCHEMAS: dict[str, pa.Schema] = {"utilization": UTILIZATION_SCHEMA}

# Arrow types of a row dataclass's fields, by annotation (see schema_of)
_ARROW_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "str | None": pa.string(),
    "int": pa.int32(),
    "Int64": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "list[float]": pa.list_(pa.float64()),
    "list[int]": pa.list_(pa.int32()),
    "list[Int64]": pa.list_(pa.int64()),
    "list[str]": pa.list_(pa.string()),
}


def schema_of(row_type: type) -> pa.Schema:
    """The Arrow schema of a row dataclass: one column per field, in field order.

    A field whose ``metadata`` has ``"row": False`` is not a column (a job's epoch history,
    its model bytes). Annotations map through :data:`_ARROW_TYPES`; any other is an error,
    so a new field gets a column or a clear failure, never a silent drop.
    """
    columns = []
    for f in dataclasses.fields(row_type):
        if f.metadata.get("row", True) is False:
            continue
        arrow = _ARROW_TYPES.get(str(f.type))
        if arrow is None:
            raise TypeError(
                f"{row_type.__name__}.{f.name}: no Arrow type for {f.type!r}; use one of "
                f"{', '.join(_ARROW_TYPES)}"
            )
        columns.append((f.name, arrow))
    return pa.schema(columns)


# the key of each table written in batches (raynn.runs.batches): its rows' owner, e.g. a job
TABLE_KEYS: dict[str, str] = {}


def register_table(name: str, schema: pa.Schema, key: str | None = None) -> pa.Schema:
    """Record the schema of the table in folder ``name`` (each kind's row module does), and
    the key of a table written in batches (:class:`raynn.runs.batches.BatchedTable`)."""
    TABLE_SCHEMAS[name] = schema
    if key is not None:
        TABLE_KEYS[name] = key
    return schema


def write_table(path: Path, rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> None:
    """Write ``rows`` as one Parquet file with ``schema``, atomically.

    Raises:
        ValueError: a row has a column the schema lacks (it would be dropped silently).
    """
    rows = list(rows)
    extra = {k for r in rows for k in r} - set(schema.names)
    if extra:
        raise ValueError(f"{path.parent.name} rows have columns its schema lacks: {sorted(extra)}")
    table = pa.Table.from_pylist(rows, schema=schema)
    atomic_write(path, lambda fh: pq.write_table(table, fh))


class RunLock:
    """``run.lock`` in a run directory: one live driver per run directory.

    The driver holds an exclusive ``fcntl.flock`` on the file for the life of the run, so
    the kernel drops it when the driver dies, however it dies; the file's text (pid, host,
    since) only names the holder in the message another driver gets. Taking the lock first
    refuses a run directory holding a symlink (:func:`~raynn.runs.files.check_no_links`),
    then removes temporary files a killed writer left behind. Works for every
    driver on one host and on file systems with working ``flock`` (not every NFS).
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / "run.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise OutputError naming its holder."""
        import fcntl

        check_no_links(self.path.parent)
        while True:
            try:  # never through a link: the lock's text would overwrite its target
                fd = os.open(
                    self.path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
                )
            except OSError as exc:
                if self.path.is_symlink():
                    raise link_error(self.path.parent, self.path) from None
                raise OutputError(
                    f"cannot write {self.path}: {exc.strerror}; fix permissions or free space"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputError(
                    f"run directory {self.path.parent} is in use by another raynn driver "
                    f"({self._holder()}); wait for it to finish"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.lstat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its last holder unlinked while we opened it
                break
            os.close(fd)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(me).encode())
        self._fd = fd
        sweep_temp_files(self.path.parent)  # no live writer owns one now

    def _holder(self) -> str:
        try:
            return read_bytes(self.path).decode(errors="replace").strip() or "starting"
        except OSError:
            return "unknown"

    def release(self) -> None:
        """Drop the lock (if this object holds it) and remove the file."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def held(self) -> bool:
        """Whether a live driver on this host holds the lock (a killed one holds nothing)."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # no lock file (released), or a link (never raynn's)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the shared lock this call may have taken
        return False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# where Ray unpacks a job's working_dir (``ray job submit --working-dir``): a temporary copy
_RAY_WORKING_DIR = f"{os.sep}runtime_resources{os.sep}working_dir_files{os.sep}"


def output_root(path: str | os.PathLike[str]) -> Path:
    """The absolute folder run directories go under, resolved on the driver before any worker
    or actor sees a path.

    A relative ``path`` is taken from the working directory, except under a Ray job with a
    ``working_dir``, whose working directory is Ray's temporary copy of the upload (deleted
    with the session): there it is taken from ``$RAYNN_RESULTS_HOME``, else the home
    directory, and a line on stderr says where the results go.
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    base = Path.cwd()
    if _RAY_WORKING_DIR in f"{base}{os.sep}":
        base = Path(os.environ.get("RAYNN_RESULTS_HOME") or Path.home())
        print(
            f"raynn: the working directory is Ray's copy of the job's working_dir; results go "
            f"under {base / p} (set RAYNN_RESULTS_HOME or an absolute output.dir to choose)",
            file=sys.stderr,
            flush=True,
        )
    return (base / p).absolute()


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


def read_table(
    run_dir: str | os.PathLike[str], table: str, damaged: list[Path] | None = None
) -> Any:
    """Read one table of a run directory as a pandas DataFrame (empty if it has no rows).

    A file that is not readable Parquet (truncated, overwritten) raises OutputError naming
    it, or, given a ``damaged`` list, is left out and appended to it. A run directory holding
    a symlink is refused (OutputError, :func:`~raynn.runs.files.check_no_links`).
    """
    import pandas as pd

    check_no_links(run_dir)
    parts, bad = _read_parts(Path(run_dir) / table, TABLE_KEYS.get(table))
    if bad and damaged is None:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise OutputError(
            f"{bad[0]} is damaged, not readable Parquet{more}; run 'raynn run --resume "
            f"{Path(run_dir)}' to train its jobs again (it is set aside), or delete it"
        )
    if damaged is not None:
        damaged.extend(bad)
    if not parts:
        schema = TABLE_SCHEMAS.get(table)
        return schema.empty_table().to_pandas() if schema is not None else pd.DataFrame()
    whole = pa.concat_tables(parts, promote_options="permissive")
    if table in TABLE_KEYS:  # each key's rows from its newest file
        whole = batches.latest(whole, TABLE_KEYS[table])
    return whole.to_pandas()


def _read_parts(path: Path, key: str | None) -> tuple[list[pa.Table], list[Path]]:
    """The tables of folder ``path``'s files (a keyed table's batches and journals ranked,
    :func:`raynn.runs.batches.read_ranked`), and the files that are not readable."""
    parts, bad = [], []
    files = sorted(path.iterdir()) if path.is_dir() else []
    for file in files:
        journal = key is not None and batches.sequence(file.name) is not None
        if file.suffix != ".parquet" and not journal:
            continue
        try:
            data = batches.read_ranked(file) if key is not None else _read_parquet(file)
        except (OSError, pa.ArrowException):
            bad.append(file)
            continue
        if data is not None:  # None: a journal with no whole record
            parts.append(data)
    return parts, bad


def _read_parquet(file: Path) -> pa.Table:
    return pq.read_table(pa.BufferReader(read_bytes(file)))


def set_aside(run_dir: str | os.PathLike[str], files: list[Path]) -> list[Path]:
    """Move damaged files out of their tables into ``<run_dir>/damaged/``; their new paths."""
    moved = []
    for file in files:
        target = Path(run_dir) / "damaged" / f"{file.parent.name}-{file.name}"
        try:
            folder = open_folder(target.parent)
            try:
                os.replace(file, target.name, dst_dir_fd=folder)
            finally:
                os.close(folder)
        except OSError as exc:
            raise OutputError(
                f"cannot move the damaged {file} aside: {exc.strerror}; delete it by hand"
            ) from None
        moved.append(target)
    return moved
