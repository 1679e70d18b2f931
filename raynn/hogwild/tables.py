"""The Parquet tables of a HOGWILD run directory: their schemas (derived from the row
dataclasses, :mod:`raynn.hogwild.rows`) and the per-attempt writer.

``eval/part-<n>.parquet`` (:data:`EVAL_SCHEMA`): the global weights' test loss/accuracy over
time; ``hogwild/part-<n>.parquet`` (:data:`HOGWILD_SCHEMA`): one row per worker;
``utilization/<node>-<n>.parquet``: per-core CPU % (:data:`raynn.runs.results.UTILIZATION_SCHEMA`).
"""

from __future__ import annotations

from pathlib import Path

from raynn.hogwild.rows import EvalRow, WorkerRow
from raynn.runs.files import file_stem
from raynn.runs.results import UTILIZATION_SCHEMA, register_table, schema_of, write_table

EVAL_SCHEMA = register_table("eval", schema_of(EvalRow))
HOGWILD_SCHEMA = register_table("hogwild", schema_of(WorkerRow))


def write_tables(
    run_dir: Path, n: int, rows: list[dict], evals: list[dict], util: list[dict]
) -> None:
    """Write attempt ``n``'s worker rows, eval rows and utilization rows (one file per node)."""
    write_table(run_dir / "hogwild" / f"part-{n}.parquet", rows, HOGWILD_SCHEMA)
    write_table(run_dir / "eval" / f"part-{n}.parquet", evals, EVAL_SCHEMA)
    by_node: dict[str, list[dict]] = {}
    for r in util:
        by_node.setdefault(r["node"], []).append(r)
    for node, node_rows in by_node.items():
        path = run_dir / "utilization" / f"{file_stem(node)}-{n}.parquet"
        write_table(path, node_rows, UTILIZATION_SCHEMA)
