"""Tables kept as few files: a journal for every write, Parquet batches, one file at the end.

A table whose rows belong to keys (a K-fold job's row and its epoch rows, by ``job_id``) is
written by one :class:`BatchedTable` per run (the collector's; ``run.lock`` keeps it one):

* :meth:`~BatchedTable.put` appends the key's rows to ``<table>/_journal-<seq>-<pid>.arrows``
  (an Arrow IPC stream written through an unbuffered descriptor), so they survive a kill -9
  of the writer the moment ``put`` returns, without an fsync per job;
* every :data:`BATCH_ROWS` rows or :data:`BATCH_SECONDS` seconds (:meth:`~BatchedTable.put`
  checks), the journal's rows go to ``<table>/batch-<seq>-<pid>.parquet`` (atomic and
  fsync'ed) and the journal is removed; past :data:`MAX_BATCHES` batches they are merged into
  one;
* :meth:`~BatchedTable.close` (the run's end) leaves one Parquet file per table.

A later write of a key replaces its earlier rows. Readers rank each row by its file's
sequence number (:func:`read_ranked`: a per-job file of an older schema first, a journal's
records in order) and take each key's rows from its newest write (:func:`latest`); so a
crash between writing a batch and removing what it replaces leaves duplicates that no reader
sees. A journal's torn last record (power loss)
is skipped: its job has no row and runs again on resume.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raynn.runs.files import (
    atomic_write,
    create_unbuffered,
    read_bytes,
    remove_file,
    write_error,
)

BATCH_ROWS = 4096  # journal rows that make a batch
BATCH_SECONDS = 30.0  # or the age of the journal's first row
MAX_BATCHES = 8  # batches that are merged into one

_NAME = re.compile(r"^(?:batch-(\d+)-\d+(?:-m)?\.parquet|_journal-(\d+)-\d+\.arrows)$")


def sequence(name: str) -> int | None:
    """The sequence number of a batch or journal file name; None for any other file."""
    match = _NAME.match(name)
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


def read_journal(data: bytes) -> list[pa.RecordBatch]:
    """The whole records of a journal; a torn last record (or header) is left out."""
    batches: list[pa.RecordBatch] = []
    try:
        reader = pa.ipc.open_stream(pa.BufferReader(data))
        while True:
            batches.append(reader.read_next_batch())
    except StopIteration:
        pass
    except (OSError, pa.ArrowException):  # torn by a power loss: what came before stands
        pass
    return batches


def latest(table: pa.Table, key: str) -> pa.Table:
    """The rows of ``table`` whose ``_rank`` is the highest of their key's, without ``_rank``."""
    best = table.group_by(key).aggregate([("_rank", "max")])
    top = best["_rank_max"].take(pc.index_in(table[key], value_set=best[key]))
    return table.filter(pc.equal(table["_rank"], top)).drop_columns(["_rank"])


RANK_SHIFT = 32  # a file's rank is its sequence number shifted; a journal's records count up


def read_ranked(file: Path) -> pa.Table | None:
    """A batch, journal or per-job file's rows with their readers' ``_rank``: the file's
    sequence number (0 for a per-job file), and in a journal one more for each record. None
    for a journal without a whole record."""
    data = read_bytes(file)
    seq = (sequence(file.name) or 0) << RANK_SHIFT
    if file.suffix == ".parquet":
        table = pq.read_table(pa.BufferReader(data))
        return table.append_column("_rank", pa.array([seq] * table.num_rows, pa.int64()))
    records = read_journal(data)
    if not records:
        return None
    ranks = [seq + i for i, b in enumerate(records) for _ in range(b.num_rows)]
    return pa.Table.from_batches(records).append_column("_rank", pa.array(ranks, pa.int64()))


class BatchedTable:
    """The one writer of a keyed table of a run directory (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str], key: str, shared: bool = False) -> None:
        """``shared``: other writers write the folder at once; their journals and batches are
        theirs (nothing is recovered or merged)."""
        self.folder = Path(folder)
        self.key = key
        self.shared = shared
        self._rows: dict[str, pa.Table] = {}  # the journal's rows by key, newest write
        self._kept = 0  # their count
        self._journal: Any = None  # (path, file, stream writer) of the open journal
        self._since = 0.0  # when the journal's first row came
        self._schema: pa.Schema | None = None
        self._seq = 1 + max(self._sequences(), default=0)
        if not shared:
            self._recover()

    def _files(self) -> list[str]:
        with suppress(FileNotFoundError):
            return [n for n in os.listdir(self.folder) if sequence(n) is not None]
        return []

    def _sequences(self) -> list[int]:
        return [s for n in self._files() if (s := sequence(n)) is not None]

    def _next(self) -> int:
        self._seq += 1
        return self._seq - 1

    def _recover(self) -> None:
        """Fold the journals a killed writer left into a batch (their rows, newest last)."""
        journals = sorted((n for n in self._files() if n.startswith("_journal")), key=sequence)
        for name in journals:
            for batch in read_journal(read_bytes(self.folder / name)):
                self._keep(batch.column(self.key)[0].as_py(), pa.Table.from_batches([batch]))
        if self._rows:
            self._write_batch()
        for name in journals:
            remove_file(self.folder / name)

    def _keep(self, key: str, rows: pa.Table) -> None:
        """Hold ``rows`` as key ``key``'s newest write (last in order) for the next batch."""
        old = self._rows.pop(key, None)
        self._kept += rows.num_rows - (old.num_rows if old is not None else 0)
        self._rows[key] = rows
        self._schema = self._schema or rows.schema

    def put(self, key: str, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
        """Write ``rows`` (all of key ``key``) in place of the key's earlier rows; durable
        against a kill of this process when this returns. No rows write nothing (a key's
        earlier rows stay)."""
        table = pa.Table.from_pylist(rows, schema=schema)
        if not table.num_rows:
            return
        if self._journal is not None and schema != self._schema:
            self.flush()
        try:
            if self._journal is None:
                self._open_journal(schema)
            self._journal[2].write_batch(table.combine_chunks().to_batches()[0])  # one record
        except OSError as exc:  # a full disk: a torn record ends this journal
            self._journal = None
            raise write_error(self.folder / "_journal", exc) from None
        self._keep(key, table)
        if self._kept >= BATCH_ROWS or time.monotonic() - self._since >= BATCH_SECONDS:
            self.flush()

    def _open_journal(self, schema: pa.Schema) -> None:
        path = self.folder / f"_journal-{self._next():09d}-{os.getpid()}.arrows"
        file = create_unbuffered(path)  # every record reaches the kernel at once
        self._journal = (path, file, pa.ipc.new_stream(file, schema))
        self._schema, self._since = schema, time.monotonic()

    def flush(self) -> None:
        """Write the journal's rows as one Parquet batch (durably), then remove the journal;
        merge the batches once there are more than :data:`MAX_BATCHES`."""
        if self._rows:
            self._write_batch()
        if self._journal is not None:
            path, file, writer = self._journal
            self._journal = None
            writer.close()
            file.close()
            remove_file(path)
        if not self.shared and len(self._batches()) > MAX_BATCHES:
            self.merge()

    def _write_batch(self) -> None:
        table = pa.concat_tables(list(self._rows.values()), promote_options="permissive")
        path = self.folder / f"batch-{self._next():09d}-{os.getpid()}.parquet"
        atomic_write(path, lambda fh: pq.write_table(table, fh))
        self._rows.clear()
        self._kept = 0

    def _batches(self) -> list[str]:
        return sorted((n for n in self._files() if n.startswith("batch-")), key=sequence)

    def merge(self) -> None:
        """Merge every batch into one file (each key's rows from its newest batch)."""
        names = self._batches()
        if len(names) < 2:
            return
        parts = [t for n in names if (t := read_ranked(self.folder / n)) is not None]
        table = latest(pa.concat_tables(parts, promote_options="permissive"), self.key)
        path = self.folder / f"batch-{self._next():09d}-{os.getpid()}-m.parquet"
        atomic_write(path, lambda fh: pq.write_table(table, fh))
        for name in names:  # a crash here leaves duplicates that readers rank below it
            remove_file(self.folder / name)

    def close(self) -> None:
        """The run's end: every row in one Parquet file (a shared folder: this writer's rows
        in one more)."""
        self.flush()
        if not self.shared:
            self.merge()
