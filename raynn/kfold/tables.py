"""The Parquet tables of a K-fold run directory: ``jobs/`` and ``epochs/``, their schemas
derived from the row dataclasses (:mod:`raynn.kfold.rows`) and registered for readers, plus
one column per searched key of the run (:func:`search_schema`). Both are written in batches
keyed by ``job_id`` (:mod:`raynn.runs.batches`)."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from raynn.kfold.rows import EpochRecord, JobResult
from raynn.runs.results import register_table, schema_of

JOBS_SCHEMA = register_table("jobs", schema_of(JobResult), key="job_id")
EPOCHS_SCHEMA = register_table("epochs", schema_of(EpochRecord), key="job_id")

_SEARCH_TYPES = {
    "float64": pa.float64(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "json": pa.string(),  # JSON text
}


def search_schema(schema: pa.Schema, columns: Iterable[tuple[str, str, object]]) -> pa.Schema:
    """``schema`` with a run's searched keys appended, one typed column each
    (``raynn.spec.search.Column``: float64, int64, bool, string; lists as JSON text)."""
    for name, type_, _ in columns:
        schema = schema.append(pa.field(name, _SEARCH_TYPES[type_]))
    return schema
