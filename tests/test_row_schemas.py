"""Each table's schema is derived from its row dataclass: a column is one field, never dropped."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pandas as pd
import pyarrow as pa
import pytest

from raynn.hogwild.rows import EvalRow, WorkerRow
from raynn.hogwild.tables import EVAL_SCHEMA, HOGWILD_SCHEMA
from raynn.kfold.rows import EpochRecord, JobResult
from raynn.kfold.tables import EPOCHS_SCHEMA, JOBS_SCHEMA
from raynn.runs.results import TABLE_SCHEMAS, read_table, schema_of, write_table


@pytest.mark.parametrize(
    ("table", "row_type", "schema"),
    [
        ("jobs", JobResult, JOBS_SCHEMA),
        ("epochs", EpochRecord, EPOCHS_SCHEMA),
        ("eval", EvalRow, EVAL_SCHEMA),
        ("hogwild", WorkerRow, HOGWILD_SCHEMA),
    ],
)
def test_every_table_has_its_row_types_columns(table, row_type, schema):
    assert TABLE_SCHEMAS[table] is schema
    columns = [f.name for f in fields(row_type) if f.metadata.get("row", True)]
    assert schema.names == columns


def test_a_worker_row_round_trips_with_its_int64_columns(tmp_path):
    row = WorkerRow("n0w0", "vm", 0, "sync", 3, 1, steps=2**40, staleness_hist=[2**33, 1])
    write_table(tmp_path / "hogwild" / "part-0.parquet", [row.row()], HOGWILD_SCHEMA)
    back = read_table(tmp_path, "hogwild")
    assert back.loc[0, "steps"] == 2**40 and list(back.loc[0, "staleness_hist"]) == [2**33, 1]
    assert HOGWILD_SCHEMA.field("staleness_hist").type == pa.list_(pa.int64())
    assert pd.isna(back.loc[0, "staleness_mean"]) and pd.isna(back.loc[0, "error"])


def test_a_field_without_an_arrow_type_is_an_error_not_a_dropped_column():
    @dataclass
    class Odd:
        when: complex

    with pytest.raises(TypeError, match=r"Odd\.when: no Arrow type"):
        schema_of(Odd)
