"""Summaries of a run directory: accuracy per model x scheduler, timing, utilisation."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from raynn.errors import RaynnError
from raynn.kfold.racing import race_summary
from raynn.kfold.rows import FINAL
from raynn.kfold.tables import JOBS_SCHEMA  # noqa: F401 - registers the tables' schemas
from raynn.runs import figures as plots
from raynn.runs.html import Figure, utilization_figure
from raynn.runs.report import mean_utilization, read_meta
from raynn.runs.results import read_table


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


def summarize(run_dir: str | os.PathLike[str]) -> str:
    """A markdown summary of a K-fold run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise RaynnError(
            f"{run_dir} is not a raynn run directory (no run.json); pass runs/<run-id>"
        )
    meta = read_meta(run_dir)
    jobs = read_table(run_dir, "jobs")
    last = (meta.get("runs") or [{}])[-1]
    name = meta.get("spec", {}).get("name", run_dir.name)
    lines = [f"# raynn run {run_dir.name}", ""]
    ok = jobs[jobs["status"] == "ok"] if not jobs.empty else jobs
    failed = jobs[~jobs["status"].isin(FINAL)] if not jobs.empty else jobs
    raced = race_summary(jobs)
    lines.append(
        f"- spec: {name}; executor: {last.get('executor', '?')}; status: "
        f"{last.get('status', '?')}; runs: {len(meta.get('runs', []))}"
    )
    n_raced = sum(r["folds_raced_out"] for r in raced)
    lines.append(
        f"- jobs: {len(ok)} ok, {len(failed)} failed" + (f", {n_raced} raced out" if raced else "")
    )
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
            f"core(s); nodes: {', '.join(sorted(set(jobs['node']) - {''}))}; mean CPU "
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
    if raced:
        saved = sum(r["job_seconds_saved"] for r in raced)
        lines += [
            "",
            f"Fold racing: {n_raced} folds raced out, about {saved:.1f} job-seconds saved.",
            "",
            "| model | scheduler | folds run | raced out | job-seconds saved | why |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['model']} | {r['scheduler']} | {r['folds_run']} | {r['folds_raced_out']} | "
            f"{r['job_seconds_saved']:.1f} | {r['reason']} |"
            for r in raced
        ]
    if not failed.empty:
        lines += ["", "Failed jobs:"]
        for _, row in failed.sort_values("job_id").iterrows():
            lines.append(f"- {row['job_id']} (attempt {row['attempt']}): {row['error']}")
    return "\n".join(lines) + "\n"


# -- one run against another --------------------------------------------------------------------
_KEYS = ["model", "scheduler", "fold"]


def paired_folds(run: Any, other: Any, metric: str = "val_accuracy") -> Any:
    """The ok jobs of both job tables joined on (model, scheduler, fold): one row per pair
    with ``run``, ``other`` (the metric in each) and ``difference`` (run - other)."""

    def ok(jobs: Any) -> Any:
        rows = jobs[jobs["status"] == "ok"] if len(jobs) else jobs
        return rows[[*_KEYS, metric]].dropna(subset=[metric])

    pairs = ok(run).merge(ok(other), on=_KEYS, suffixes=("_run", "_other"))
    pairs = pairs.rename(columns={f"{metric}_run": "run", f"{metric}_other": "other"})
    pairs["difference"] = pairs["run"] - pairs["other"]
    return pairs.sort_values(_KEYS).reset_index(drop=True)


def paired_p_value(run: Any, other: Any) -> float:
    """Two-sided p-value of a paired t-test of ``run`` against ``other`` (same order).

    NaN with fewer than two pairs or when every difference is zero (nothing to test); 0.0
    when the differences are all the same non-zero value.
    """
    diffs = [float(a) - float(b) for a, b in zip(run, other, strict=True)]
    if len(diffs) < 2 or all(d == 0 for d in diffs):
        return math.nan
    if max(diffs) == min(diffs):
        return 0.0
    from scipy import stats

    return float(stats.ttest_rel(list(run), list(other)).pvalue)


def paired_table(pairs: Any) -> Any:
    """Per model x scheduler: folds paired, mean of each run, mean difference, p-value."""
    import pandas as pd

    rows = [
        {
            "model": model,
            "scheduler": sched,
            "folds": len(g),
            "run": float(g["run"].mean()),
            "other": float(g["other"].mean()),
            "difference": float(g["difference"].mean()),
            "p_value": paired_p_value(g["run"], g["other"]),
        }
        for (model, sched), g in pairs.groupby(["model", "scheduler"], sort=True)
    ]
    return pd.DataFrame(
        rows, columns=["model", "scheduler", "folds", "run", "other", "difference", "p_value"]
    )


def wall_seconds(run_dir: str | os.PathLike[str], jobs: Any = None) -> float | None:
    """The run's wall time: run.json's last attempt ``wall_seconds``, else the span from the
    first job's start to the last job's end; None when neither is known."""
    last = (read_meta(Path(run_dir)).get("runs") or [{}])[-1]
    wall = last.get("wall_seconds")
    if isinstance(wall, (int, float)) and wall > 0:
        return float(wall)
    jobs = read_table(run_dir, "jobs") if jobs is None else jobs
    if len(jobs) and jobs["start_time"].notna().any():
        return float(jobs["end_time"].max() - jobs["start_time"].min())
    return None


def _kfold_jobs(run_dir: Path) -> Any:
    if not (run_dir / "run.json").is_file():
        raise RaynnError(
            f"{run_dir} is not a raynn run directory (no run.json); pass runs/<run-id>"
        )
    if read_meta(run_dir).get("spec", {}).get("kind") == "hogwild":
        raise RaynnError(f"--against compares K-fold runs; {run_dir} is a HOGWILD run")
    return read_table(run_dir, "jobs")


def _p(value: float, pairs: Any) -> str:
    if not math.isnan(value):
        return f"{value:.3g}"
    return "identical" if len(pairs) > 1 and (pairs["difference"] == 0).all() else "-"


def compare(run_dir: str | os.PathLike[str], other_dir: str | os.PathLike[str]) -> str:
    """Markdown: accuracy of ``run_dir`` against ``other_dir`` per model x scheduler, paired
    by fold, with the paired t-test and the speed-up (other's wall time / run's)."""
    run_dir, other_dir = Path(run_dir), Path(other_dir)
    run, other = _kfold_jobs(run_dir), _kfold_jobs(other_dir)
    pairs = paired_folds(run, other)
    if pairs.empty:
        raise RaynnError(
            f"{run_dir.name} and {other_dir.name} have no ok job in common (same model, "
            "scheduler and fold): compare two runs of the same spec"
        )

    def who(d: Path) -> str:
        last = (read_meta(d).get("runs") or [{}])[-1]
        return f"{d.name} ({last.get('executor', '?')} executor)"

    lines = [
        f"## {run_dir.name} against {other_dir.name}",
        "",
        f"- A = {who(run_dir)}; B = {who(other_dir)}",
        "- accuracy paired by (model, scheduler, fold); difference = A - B; p: two-sided "
        "paired t-test over the folds",
    ]
    a_wall, b_wall = wall_seconds(run_dir, run), wall_seconds(other_dir, other)
    if a_wall and b_wall:
        lines.append(
            f"- speed-up: B {b_wall:.1f} s / A {a_wall:.1f} s = {b_wall / a_wall:.2f}x "
            "(wall time of each run's last attempt)"
        )
    ok_keys = [set(map(tuple, t[t["status"] == "ok"][_KEYS].to_numpy())) for t in (run, other)]
    lone = len(ok_keys[0] ^ ok_keys[1])
    if lone:
        lines.append(f"- {lone} ok job(s) in only one of the runs: left out")
    for metric, name in (("val_accuracy", "val accuracy"), ("test_accuracy", "test accuracy")):
        metric_pairs = paired_folds(run, other, metric)
        if metric_pairs.empty:
            continue
        lines += [
            "",
            f"| model | scheduler | folds | {name} A | {name} B | difference | p |",
            "|---|---|---|---|---|---|---|",
        ]
        for _, r in paired_table(metric_pairs).iterrows():
            g = metric_pairs[
                (metric_pairs["model"] == r["model"])
                & (metric_pairs["scheduler"] == r["scheduler"])
            ]
            lines.append(
                f"| {r['model']} | {r['scheduler']} | {r['folds']} | {r['run']:.4f} | "
                f"{r['other']:.4f} | {r['difference']:+.4f} | {_p(r['p_value'], g)} |"
            )
    return "\n".join(lines) + "\n"


def figures(run_dir: str | os.PathLike[str]) -> list[Figure]:
    """The figures of a K-fold run directory."""
    run_dir = Path(run_dir)
    jobs, epochs = read_table(run_dir, "jobs"), read_table(run_dir, "epochs")
    t0 = float(jobs["start_time"].min()) if len(jobs) and jobs["start_time"].notna().any() else None
    return [
        Figure(
            "accuracy",
            "accuracy_per_model_scheduler.png",
            "Accuracy per model × scheduler: each fold's point, and the mean with its 95% "
            "Student-t interval over the folds.",
            plots.accuracy_figure(jobs),
        ),
        Figure(
            "epochs",
            "validation_loss_accuracy_per_epoch.png",
            "Validation loss and accuracy after each epoch, one line per job, coloured by "
            "model × scheduler.",
            plots.epochs_figure(jobs, epochs),
        ),
        Figure(
            "timeline",
            "job_timeline_per_core.png",
            "Which job ran on which CPU of which node, and when: how the jobs were packed "
            "onto the core groups, and the tail at the end.",
            plots.timeline_figure(jobs),
        ),
        utilization_figure(run_dir, t0, "the first job started"),
    ]
