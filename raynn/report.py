"""Summaries of a run directory: accuracy per model x scheduler, timing, utilisation."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from raynn.errors import RaynnError
from raynn.results import read_table, write_bytes


def _pm(values: Any) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "-"
    mean = sum(values) / len(values)
    std = (
        math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        if len(values) > 1
        else 0.0
    )
    return f"{mean:.4f} ± {std:.4f}"


def mean_utilization(
    run_dir: str | os.PathLike[str], start: float | None = None, end: float | None = None
) -> float | None:
    """Mean CPU % over every sampled core (of the cores the run used) between start and end."""
    util = read_table(run_dir, "utilization")
    if util.empty:
        return None
    meta = _meta(Path(run_dir))
    nodes = (meta.get("runs") or [{}])[-1].get("nodes") or {}
    if nodes:
        keep = util.apply(lambda r: r["core"] in nodes.get(r["node"], [r["core"]]), axis=1)
        util = util[keep]
    if start is not None:
        util = util[util["time"] >= start]
    if end is not None:
        util = util[util["time"] <= end]
    return None if util.empty else float(util["percent"].mean())


def _meta(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def summarize(run_dir: str | os.PathLike[str]) -> str:
    """A markdown summary of a K-fold run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise RaynnError(
            f"{run_dir} is not a raynn run directory (no run.json); pass runs/<run-id>"
        )
    meta = _meta(run_dir)
    if meta.get("spec", {}).get("kind") == "hogwild":
        from raynn.hogwild.report import summarize as summarize_hogwild

        return summarize_hogwild(run_dir)
    jobs = read_table(run_dir, "jobs")
    last = (meta.get("runs") or [{}])[-1]
    name = meta.get("spec", {}).get("name", run_dir.name)
    lines = [f"# raynn run {run_dir.name}", ""]
    ok = jobs[jobs["status"] == "ok"] if not jobs.empty else jobs
    failed = jobs[jobs["status"] != "ok"] if not jobs.empty else jobs
    lines.append(
        f"- spec: {name}; executor: {last.get('executor', '?')}; status: "
        f"{last.get('status', '?')}; runs: {len(meta.get('runs', []))}"
    )
    lines.append(f"- jobs: {len(ok)} ok, {len(failed)} failed")
    if not jobs.empty:
        first, final = float(jobs["start_time"].min()), float(jobs["end_time"].max())
        util = mean_utilization(run_dir, first, final)
        lines.append(
            f"- wall time: {last.get('wall_seconds', math.nan):.1f} s; makespan (first "
            f"job start to last job end): {final - first:.1f} s; sum of job times: "
            f"{float((jobs['train_seconds'] + jobs['eval_seconds']).sum()):.1f} s"
        )
        lines.append(
            f"- workers: {last.get('workers', '?')} x {last.get('cores_per_job', '?')} "
            f"core(s); nodes: {', '.join(sorted(set(jobs['node'])))}; mean CPU "
            f"utilisation: {'-' if util is None else f'{util:.1f}%'}"
        )
        if last.get("cores_by_model"):
            chosen = ", ".join(f"{m} {c}" for m, c in sorted(last["cores_by_model"].items()))
            lines.append(f"- cores per job (auto, per model): {chosen}")
    lines += [
        "",
        "| model | scheduler | ok | val accuracy | test accuracy | train s/job |",
        "|---|---|---|---|---|---|",
    ]
    if not ok.empty:
        for (model, sched), g in ok.groupby(["model", "scheduler"], sort=True):
            lines.append(
                f"| {model} | {sched} | {len(g)} | {_pm(g['val_accuracy'])} | "
                f"{_pm(g['test_accuracy'])} | {g['train_seconds'].mean():.2f} |"
            )
    if not failed.empty:
        lines += ["", "Failed jobs:"]
        for _, row in failed.sort_values("job_id").iterrows():
            lines.append(f"- {row['job_id']} (attempt {row['attempt']}): {row['error']}")
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | os.PathLike[str]) -> str:
    """Write ``report.md`` into the run directory and return its text."""
    text = summarize(run_dir)
    write_bytes(Path(run_dir) / "report.md", text.encode())
    return text
