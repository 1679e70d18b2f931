"""Summaries of a run directory: accuracy per configuration, fold racing, timing, utilisation.

A configuration is a model, a scheduler and one set of searched values (its id in the
``config`` column; ``model/scheduler`` in a run without a search or written before the
column). The summary ranks the configurations by mean validation accuracy and shows the
best :data:`TOP` (every one in a run without searched keys), with each searched key a column.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from raynn.errors import RaynnError
from raynn.kfold.race_report import race_lines
from raynn.kfold.racing import race_summary, with_config
from raynn.kfold.rows import FINAL, RACED_OUT
from raynn.kfold.tables import JOBS_SCHEMA  # noqa: F401 - registers the tables' schemas
from raynn.runs import figures as plots
from raynn.runs.html import Figure, utilization_figure
from raynn.runs.report import (
    attempt_status,
    fold_differences,
    last_work,
    read_meta,
    utilization_text,
)
from raynn.runs.results import read_table
from raynn.runs.search_figures import column_heads, searched_columns, value_text
from raynn.runs.search_figures import figures as search_figures

TOP = 10  # configurations in the summary's table when the run searched some key


def _config_cells(jobs: Any, columns: list[dict[str, str]]) -> dict[str, list[str]]:
    """Each configuration's leading cells: its model, scheduler and searched values."""
    first = with_config(jobs).drop_duplicates("config") if len(jobs) else jobs
    return {
        str(r["config"]): [
            str(r["model"]),
            str(r["scheduler"]),
            *(value_text(r[c["name"]], c["type"]) for c in columns),
        ]
        for _, r in first.iterrows()
    }


def config_table(jobs: Any, metric: str = "val_accuracy") -> Any:
    """Per configuration with an ok fold, best first (by the mean of ``metric``; ties by id):
    ``config``, ``folds`` (ok), ``mean`` and ``half`` (the half-width of its 95% Student-t
    interval over the ok folds; NaN with one fold), ``test`` (mean test accuracy),
    ``train_seconds`` (mean per fold) and ``raced_out`` (whether racing stopped it)."""
    import pandas as pd

    jobs = with_config(jobs) if len(jobs) else jobs
    out = set(jobs.loc[jobs["status"] == RACED_OUT, "config"]) if len(jobs) else set()
    ok = jobs[jobs["status"] == "ok"] if len(jobs) else jobs
    rows = []
    for config, g in ok.groupby("config", sort=True) if len(ok) else []:
        mean, half = plots.t_interval(g[metric].tolist())
        rows.append(
            {
                "config": str(config),
                "folds": len(g),
                "mean": mean,
                "half": half,
                "test": float(g["test_accuracy"].mean()),
                "train_seconds": float(g["train_seconds"].mean()),
                "raced_out": config in out,
            }
        )
    table = pd.DataFrame(
        rows, columns=["config", "folds", "mean", "half", "test", "train_seconds", "raced_out"]
    )
    table["_nan"] = table["mean"].isna()
    table = table.sort_values(["_nan", "mean", "config"], ascending=[True, False, True])
    return table.drop(columns="_nan").reset_index(drop=True)


def _number(value: float, half: float | None = None) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.4f}" if half is None or math.isnan(half) else f"{value:.4f} ± {half:.4f}"


def _config_lines(jobs: Any, columns: list[dict[str, str]]) -> list[str]:
    """The table of the configurations, best first: the best TOP where a key was searched."""
    table = config_table(jobs)
    shown = table.head(TOP) if columns else table
    heads = [*column_heads(columns), "ok", "val accuracy (± 95% t)", "test accuracy", "train s/job"]
    what = f"the best {len(shown)} of {len(table)}" if len(shown) < len(table) else "all"
    lines = [
        "",
        f"Configurations by mean validation accuracy, best first ({what}); ± the half-width "
        "of the 95% Student-t interval of the mean over the ok folds.",
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "---|" * len(heads),
    ]
    cells = _config_cells(jobs, columns)
    for _, r in shown.iterrows():
        folds = f"{r['folds']} (raced out)" if r["raced_out"] else str(r["folds"])
        lines.append(
            f"| {' | '.join(cells[r['config']])} | {folds} | {_number(r['mean'], r['half'])} "
            f"| {_number(r['test'])} | {r['train_seconds']:.2f} |"
        )
    if len(shown) < len(table):
        rest = table.iloc[len(shown) :]["mean"].dropna()
        span = f" (mean val accuracy {rest.min():.4f} to {rest.max():.4f})" if len(rest) else ""
        lines.append(f"\n... and {len(table) - len(shown)} more configurations{span}.")
    return lines


def _run_lines(run_dir: Path, meta: dict[str, Any], jobs: Any) -> list[str]:
    """The run's wall time, makespan, workers and utilisation (of its last attempt that
    had jobs to run)."""
    last = last_work(meta)
    first, final = float(jobs["start_time"].min()), float(jobs["end_time"].max())
    util = utilization_text(run_dir, first, final)
    lines = [
        f"- wall time: {last.get('wall_seconds', math.nan):.1f} s (data, planning and probe "
        f"included); makespan (first "
        f"job start to last job end): {final - first:.1f} s; sum of job times: "
        f"{float((jobs['train_seconds'] + jobs['eval_seconds']).sum()):.1f} s",
        f"- workers: {last.get('workers', '?')} x {last.get('cores_per_job', '?')} "
        f"core(s); nodes: {', '.join(sorted(set(jobs['node']) - {''}))}; mean CPU "
        f"utilisation: {util}",
    ]
    if last.get("cores_by_model"):
        chosen = ", ".join(f"{m} {c}" for m, c in sorted(last["cores_by_model"].items()))
        lines.append(f"- cores per job (auto, per model): {chosen}")
    return lines


def _n_configs(meta: dict[str, Any], jobs: Any) -> int:
    """The run's configurations: run.json's list, else those the job table names."""
    listed = (meta.get("search") or {}).get("configurations") or []
    named = with_config(jobs)["config"].nunique() if len(jobs) else 0
    return max(len(listed), named)


def _run_dir(run_dir: str | os.PathLike[str]) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise RaynnError(
            f"{run_dir} is not a raynn run directory (no run.json); pass runs/<run-id>"
        )
    return run_dir


def summarize(run_dir: str | os.PathLike[str]) -> str:
    """A markdown summary of a K-fold run directory."""
    run_dir = _run_dir(run_dir)
    meta = read_meta(run_dir)
    jobs = read_table(run_dir, "jobs")
    last = (meta.get("runs") or [{}])[-1]
    status = attempt_status(run_dir, last)
    name = meta.get("spec", {}).get("name", run_dir.name)
    ok = jobs[jobs["status"] == "ok"] if not jobs.empty else jobs
    failed = jobs[~jobs["status"].isin(FINAL)] if not jobs.empty else jobs
    raced = race_summary(jobs)
    n_raced = sum(r["folds_raced_out"] for r in raced)
    lines = [
        f"# raynn run {run_dir.name}",
        "",
        f"- spec: {name}; executor: {last.get('executor', '?')}; status: {status}; "
        f"runs: {len(meta.get('runs', []))}",
        f"- jobs: {len(ok)} ok, {len(failed)} failed" + (f", {n_raced} raced out" if raced else ""),
    ]
    if not jobs.empty:
        lines += _run_lines(run_dir, meta, jobs)
    columns = searched_columns(meta, jobs)
    if columns:
        searched = ", ".join(f"{c['name']} ({c['kind']})" for c in columns)
        lines.append(f"- configurations: {_n_configs(meta, jobs)}; searched: {searched}")
    lines += _config_lines(jobs, columns)
    lines += race_lines(raced, _n_configs(meta, jobs))
    if not failed.empty:
        lines += ["", "Failed jobs:"]
        for _, row in failed.sort_values("job_id").iterrows():
            lines.append(f"- {row['job_id']} (attempt {row['attempt']}): {row['error']}")
    return "\n".join(lines) + "\n"


# -- one run against another --------------------------------------------------------------------
_KEYS = ["config", "fold"]


def paired_folds(run: Any, other: Any, metric: str = "val_accuracy") -> Any:
    """The ok jobs of both job tables joined on (configuration, fold): one row per pair with
    ``config``, ``model``, ``scheduler``, ``fold``, ``run``, ``other`` (the metric in each)
    and ``difference`` (run - other). Tables without a ``config`` column pair by
    ``model/scheduler`` (:func:`raynn.kfold.racing.with_config`)."""

    def ok(jobs: Any) -> Any:
        rows = with_config(jobs)
        rows = rows[rows["status"] == "ok"] if len(rows) else rows
        return rows[[*_KEYS, "model", "scheduler", metric]].dropna(subset=[metric])

    theirs = ok(other).drop(columns=["model", "scheduler"])
    pairs = ok(run).merge(theirs, on=_KEYS, suffixes=("_run", "_other"))
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
    """Per configuration (sorted by id): its model and scheduler, folds paired, mean of each
    run, mean difference, p-value."""
    import pandas as pd

    rows = [
        {
            "config": config,
            "model": str(g["model"].iloc[0]),
            "scheduler": str(g["scheduler"].iloc[0]),
            "folds": len(g),
            "run": float(g["run"].mean()),
            "other": float(g["other"].mean()),
            "difference": float(g["difference"].mean()),
            "p_value": paired_p_value(g["run"], g["other"]),
        }
        for config, g in pairs.groupby("config", sort=True)
    ]
    return pd.DataFrame(
        rows,
        columns=["config", "model", "scheduler", "folds", "run", "other", "difference", "p_value"],
    )


def wall_seconds(run_dir: str | os.PathLike[str], jobs: Any = None) -> float | None:
    """The run's wall time: ``wall_seconds`` of run.json's last attempt that had jobs to run,
    else the span from the first job's start to the last job's end; None when neither is
    known."""
    last = last_work(read_meta(Path(run_dir)))
    wall = last.get("wall_seconds")
    if isinstance(wall, (int, float)) and wall > 0:
        return float(wall)
    jobs = read_table(run_dir, "jobs") if jobs is None else jobs
    if len(jobs) and jobs["start_time"].notna().any():
        return float(jobs["end_time"].max() - jobs["start_time"].min())
    return None


def _kfold_jobs(run_dir: Path) -> Any:
    if read_meta(_run_dir(run_dir)).get("spec", {}).get("kind") == "hogwild":
        raise RaynnError(f"--against compares K-fold runs; {run_dir} is a HOGWILD run")
    return with_config(read_table(run_dir, "jobs"))


def _p(value: float, pairs: Any) -> str:
    if not math.isnan(value):
        return f"{value:.3g}"
    return "identical" if len(pairs) > 1 and (pairs["difference"] == 0).all() else "-"


def _paired_lines(run: Any, other: Any, columns: list[dict[str, str]]) -> list[str]:
    """A table per metric: each configuration's folds paired, both means, the difference."""
    cells = _config_cells(run, columns)
    lines: list[str] = []
    for metric, name in (("val_accuracy", "val accuracy"), ("test_accuracy", "test accuracy")):
        pairs = paired_folds(run, other, metric)
        if pairs.empty:
            continue
        heads = [*column_heads(columns), "folds", f"{name} A", f"{name} B", "difference", "p"]
        lines += ["", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for _, r in paired_table(pairs).iterrows():
            lines.append(
                f"| {' | '.join(cells[r['config']])} | {r['folds']} | {r['run']:.4f} | "
                f"{r['other']:.4f} | {r['difference']:+.4f} | "
                f"{_p(r['p_value'], pairs[pairs['config'] == r['config']])} |"
            )
    return lines


def _unpaired_lines(run: Any, other: Any, columns: list[dict[str, str]]) -> list[str]:
    """Each configuration of both runs: its mean val accuracy (± 95% t) over its own ok
    folds in each run, and the difference of the means (no test: nothing pairs them)."""
    cells = _config_cells(run, columns)
    a, b = (config_table(t).set_index("config") for t in (run, other))
    heads = [*column_heads(columns), "folds A", "val accuracy A", "folds B", "val accuracy B"]
    lines = ["", "| " + " | ".join([*heads, "difference"]) + " |", "|" + "---|" * (len(heads) + 1)]
    for c in sorted(set(a.index) & set(b.index)):
        x, y = a.loc[c], b.loc[c]
        lines.append(
            f"| {' | '.join(cells[c])} | {x['folds']} | {_number(x['mean'], x['half'])} | "
            f"{y['folds']} | {_number(y['mean'], y['half'])} | {x['mean'] - y['mean']:+.4f} |"
        )
    return lines


def compare(run_dir: str | os.PathLike[str], other_dir: str | os.PathLike[str]) -> str:
    """Markdown: accuracy of ``run_dir`` against ``other_dir`` per configuration, paired by
    fold, with the paired t-test and the speed-up (other's wall time / run's). Runs whose
    folds differ (folds, seed, dataset: :func:`~raynn.runs.report.fold_differences`) get
    each configuration's unpaired means instead, and a speed-up only on the same data."""
    run_dir, other_dir = Path(run_dir), Path(other_dir)
    run, other = _kfold_jobs(run_dir), _kfold_jobs(other_dir)
    differ = fold_differences(read_meta(run_dir), read_meta(other_dir))
    common = set(config_table(run)["config"]) & set(config_table(other)["config"])
    if (paired_folds(run, other).empty and not differ) or not common:
        raise RaynnError(
            f"{run_dir.name} and {other_dir.name} have no ok job in common (same "
            "configuration and fold): compare two runs of the same spec"
        )

    def who(d: Path) -> str:
        last = (read_meta(d).get("runs") or [{}])[-1]
        return f"{d.name} ({last.get('executor', '?')} executor)"

    how = (
        f"the runs differ in {', '.join(differ)}: their folds hold different samples, so "
        "accuracy cannot be paired by fold and no test is made; each configuration's mean over "
        "its own ok folds; difference = A - B"
        if differ
        else "accuracy paired by (configuration, fold); difference = A - B; p: two-sided "
        "paired t-test over the folds"
    )
    lines = [f"## {run_dir.name} against {other_dir.name}", ""]
    lines += [f"- A = {who(run_dir)}; B = {who(other_dir)}", f"- {how}"]
    a_wall, b_wall = wall_seconds(run_dir, run), wall_seconds(other_dir, other)
    same_data = not [k for k in differ if k != "seed"]  # another seed: the same work
    if a_wall and b_wall and same_data:
        lines.append(
            f"- speed-up: B {b_wall:.1f} s / A {a_wall:.1f} s = {b_wall / a_wall:.2f}x "
            "(wall time of each run's last attempt with jobs to run)"
        )
    elif a_wall and b_wall:
        lines.append(
            f"- wall time: A {a_wall:.1f} s, B {b_wall:.1f} s (not a speed-up: other data or folds)"
        )
    columns = searched_columns(read_meta(run_dir), run)
    if differ:
        return "\n".join([*lines, *_unpaired_lines(run, other, columns)]) + "\n"
    ok_keys = [set(map(tuple, t[t["status"] == "ok"][_KEYS].to_numpy())) for t in (run, other)]
    lone = len(ok_keys[0] ^ ok_keys[1])
    if lone:
        lines.append(f"- {lone} ok job(s) in only one of the runs: left out")
    lines += _paired_lines(run, other, columns)
    return "\n".join(lines) + "\n"


def figures(run_dir: str | os.PathLike[str]) -> list[Figure]:
    """The figures of a K-fold run directory."""
    run_dir = Path(run_dir)
    jobs, epochs = read_table(run_dir, "jobs"), read_table(run_dir, "epochs")
    t0 = float(jobs["start_time"].min()) if len(jobs) and jobs["start_time"].notna().any() else None
    configs = with_config(jobs)
    return [
        Figure(
            "accuracy",
            "accuracy_per_model_scheduler.png",
            "Accuracy per configuration (the best by mean validation accuracy first): each "
            "fold's point, and the mean with its 95% Student-t interval over the folds.",
            plots.accuracy_figure(configs),
        ),
        *search_figures(
            configs,
            searched_columns(read_meta(run_dir), configs),
            set(configs.loc[configs["status"] == RACED_OUT, "config"]),
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
