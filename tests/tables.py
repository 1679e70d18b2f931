"""Test helpers that change a finished run's tables as a crash would have left them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def drop_rows(run_dir: Path, job_ids: Iterable[str], table: str = "jobs") -> None:
    """Remove these jobs' rows from a finished run's ``table`` (its one file), as if the
    driver had died before writing them."""
    (file,) = (Path(run_dir) / table).glob("*.parquet")
    rows = pq.read_table(file)
    kept = rows.filter(pc.invert(pc.is_in(rows["job_id"], pa.array(list(job_ids)))))
    assert kept.num_rows < rows.num_rows, "no such job in the table"
    pq.write_table(kept, file)
