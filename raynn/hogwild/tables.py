"""The Parquet tables of a HOGWILD run directory: their schemas and the per-attempt writer.

``eval/part-<n>.parquet`` (:data:`EVAL_SCHEMA`): the global weights' test loss/accuracy over
time; ``hogwild/part-<n>.parquet`` (:data:`HOGWILD_SCHEMA`): one row per worker;
``utilization/<node>-<n>.parquet``: per-core CPU % (:data:`raynn.runs.results.UTILIZATION_SCHEMA`).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from raynn.runs.files import file_stem
from raynn.runs.results import UTILIZATION_SCHEMA, register_table, write_table

EVAL_SCHEMA = register_table(
    "eval",
    pa.schema(
        [
            ("attempt", pa.int32()),
            ("time", pa.float64()),
            ("elapsed", pa.float64()),
            ("version", pa.int64()),
            ("step", pa.int64()),
            ("samples", pa.int64()),
            ("epoch", pa.float64()),
            ("loss", pa.float64()),
            ("accuracy", pa.float64()),
            ("final", pa.bool_()),
            ("per_class_accuracy", pa.list_(pa.float64())),
        ]
    ),
)

HOGWILD_SCHEMA = register_table(
    "hogwild",
    pa.schema(
        [
            ("worker", pa.string()),
            ("node", pa.string()),
            ("slot", pa.int32()),
            ("role", pa.string()),
            ("core", pa.int32()),
            ("threads", pa.int32()),
            ("status", pa.string()),
            ("error", pa.string()),
            ("epochs", pa.int32()),
            ("steps", pa.int64()),
            ("samples", pa.int64()),
            ("seconds", pa.float64()),
            ("samples_per_second", pa.float64()),
            ("loss", pa.float64()),
            ("accuracy", pa.float64()),
            ("hold_seconds", pa.float64()),
            ("pushes", pa.int64()),
            ("pulls", pa.int64()),
            ("refused", pa.int64()),
            ("wait_seconds", pa.float64()),
            ("sync_seconds", pa.float64()),
            ("staleness_mean", pa.float64()),
            ("staleness_max", pa.float64()),
            ("staleness_p50", pa.float64()),
            ("staleness_p95", pa.float64()),
            ("staleness_hist", pa.list_(pa.int64())),
            ("start_time", pa.float64()),
            ("end_time", pa.float64()),
            ("round", pa.int32()),
        ]
    ),
)


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
