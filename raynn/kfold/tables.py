"""The Parquet tables of a K-fold run directory: ``jobs/`` and ``epochs/``, their schemas
derived from the row dataclasses (:mod:`raynn.kfold.rows`) and registered for readers."""

from __future__ import annotations

from raynn.kfold.rows import EpochRecord, JobResult
from raynn.runs.results import register_table, schema_of

JOBS_SCHEMA = register_table("jobs", schema_of(JobResult))
EPOCHS_SCHEMA = register_table("epochs", schema_of(EpochRecord))
