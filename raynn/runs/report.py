"""What the K-fold and the HOGWILD reports share: a run's run.json, its mean utilisation,
and ``report.md``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from raynn.runs.results import read_table, write_bytes


def mean_utilization(
    run_dir: str | os.PathLike[str], start: float | None = None, end: float | None = None
) -> float | None:
    """Mean CPU % over every sampled core (of the cores the run used) between start and end."""
    util = read_table(run_dir, "utilization")
    if util.empty:
        return None
    meta = read_meta(Path(run_dir))
    nodes = (meta.get("runs") or [{}])[-1].get("nodes") or {}
    if nodes:
        keep = util.apply(lambda r: r["core"] in nodes.get(r["node"], [r["core"]]), axis=1)
        util = util[keep]
    if start is not None:
        util = util[util["time"] >= start]
    if end is not None:
        util = util[util["time"] <= end]
    return None if util.empty else float(util["percent"].mean())


def read_meta(run_dir: Path) -> dict[str, Any]:
    """A run directory's run.json ({} where it has none or cannot be read)."""
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def write_report(run_dir: str | os.PathLike[str], summary: str) -> str:
    """Write ``summary`` (a kind's markdown summary) as the run directory's ``report.md``."""
    write_bytes(Path(run_dir) / "report.md", summary.encode())
    return summary
