"""The run machinery both kinds share: a run directory's files (atomic and durable writes),
its one :class:`~raynn.runs.record.RunRecord` (run.json, attempts, the lock), the Parquet
tables, and the report parts (common summary, figures, report.html)."""
