"""The figures of ``raynn bench kfold`` (:mod:`raynn.bench.kfold`): each run's row, results
compared with serial references bit for bit, medians per mode, the markdown and the plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from raynn.bench.common import machine_line, markdown_table
from raynn.bench.kfold_modes import PEERS, RAYNN_MODES, ModeRun
from raynn.kfold.rows import RACED_OUT
from raynn.kfold.runner import Plan
from raynn.spec import KFoldSpec

METRICS = ["val_loss", "val_accuracy", "test_loss", "test_accuracy"]
SUMMARY_COLUMNS = [
    "mode",
    "finished",
    "ok",
    "wall_s",
    "wall_min",
    "wall_max",
    "vs_best_peer",
    "makespan_s",
    "startup_s",
    "shutdown_s",
    "overhead_s",
    "gap_ms",
    "gap_p50_ms",
    "speedup_vs_serial",
    "efficiency",
    "wall_efficiency",
    "cpu_mean",
    "cpu_last20",
    "checked",
    "equal",
    "replayed",
    "val_accuracy",
    "raced_out",
    "job_seconds",
    "compute_s",
    "best",
]


def _schedules(run: ModeRun) -> dict[str, tuple[int, ...]]:
    """Each job's threads, epoch by epoch."""
    if run.epochs.empty:
        return {}
    ordered = run.epochs.sort_values(["job_id", "epoch"])
    return {j: tuple(int(t) for t in g["threads"]) for j, g in ordered.groupby("job_id")}


class References:
    """Serial results of each job at a given per-epoch thread schedule (replayed on demand)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.jobs = {j.job_id: j for j in plan.jobs}
        self.rows: dict[tuple[str, tuple[int, ...]], tuple[float, ...]] = {}
        self.replayed: set[tuple[str, tuple[int, ...]]] = set()

    def add(self, run: ModeRun) -> None:
        """Serial runs are references for the schedules they ran."""
        schedules = _schedules(run)
        for _, row in run.jobs[run.jobs["status"] == "ok"].iterrows():
            key = (row["job_id"], schedules.get(row["job_id"], ()))
            self.rows.setdefault(key, tuple(row[m] for m in METRICS))

    def get(self, job_id: str, schedule: tuple[int, ...]) -> tuple[float, ...] | None:
        """The reference of ``job_id`` at ``schedule``; replayed if no serial run has it
        (only once some serial run exists: without one, nothing is compared)."""
        key = (job_id, schedule)
        if key not in self.rows and self.rows and job_id in self.jobs and schedule:
            from raynn.kfold.train import train_job

            result = train_job(self.jobs[job_id], self.plan.data, threads=list(schedule))
            self.rows[key] = tuple(getattr(result, m) for m in METRICS)
            self.replayed.add(key)
        return self.rows.get(key)


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    """Bit for bit, NaN equal to NaN (a metric a job does not have)."""
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


def _util_stats(util: pd.DataFrame, start: float, end: float, first: float, last: float):
    def mean(lo: float, hi: float) -> float:
        window = util[(util["time"] >= lo) & (util["time"] <= hi)]
        per_sample = window.groupby("time")["percent"].mean()
        return float(per_sample.mean()) if not per_sample.empty else math.nan

    return mean(start, end), mean(last - 0.2 * (last - first), last)


def job_gaps_ms(jobs: pd.DataFrame) -> pd.Series:
    """Milliseconds from each job's end to the next start on the same worker: what a worker
    spends between two jobs (its result handed over, its next lease, that job's set-up)."""
    if jobs.empty or "worker" not in jobs:
        return pd.Series(dtype=float)
    ordered = jobs.sort_values(["worker", "start_time"])
    same = ordered["worker"].eq(ordered["worker"].shift(-1))
    return ((ordered["start_time"].shift(-1) - ordered["end_time"]) * 1e3)[same]


def run_row(run: ModeRun, n_jobs: int, refs: References) -> dict[str, Any]:
    """One run's figures (before medians)."""
    ok = run.jobs[run.jobs["status"] == "ok"] if not run.jobs.empty else run.jobs
    raced = run.jobs[run.jobs["status"] == RACED_OUT] if not run.jobs.empty else run.jobs
    finished = run.returncode == 0 and not run.timed_out and len(ok) + len(raced) == n_jobs
    first = float(run.jobs["start_time"].min()) if not run.jobs.empty else run.exited
    last = float(run.jobs["end_time"].max()) if not run.jobs.empty else run.exited
    cpu_mean, cpu_last20 = _util_stats(run.util, run.invoked, run.exited, first, last)
    schedules = _schedules(run)
    gaps = job_gaps_ms(run.jobs)
    equal = replayed = checked = 0
    for _, row in ok.iterrows():
        schedule = schedules.get(row["job_id"], ())
        key = (row["job_id"], schedule)
        was_replayed = key in refs.replayed or key not in refs.rows
        ref = refs.get(*key)
        if ref is None:
            continue
        checked += 1
        replayed += was_replayed
        equal += _same(ref, tuple(row[m] for m in METRICS))
    return {
        "mode": run.mode,
        "repeat": run.repeat,
        "finished": finished,
        "ok": len(ok),
        "wall_s": run.exited - run.invoked if finished else math.inf,
        "makespan_s": last - first if finished else math.inf,
        "startup_s": first - run.invoked,
        "shutdown_s": run.exited - last,
        "overhead_s": (first - run.invoked) + (run.exited - last),
        "gap_ms": float(gaps.mean()) if len(gaps) else math.nan,
        "gap_p50_ms": float(gaps.median()) if len(gaps) else math.nan,
        # every fold that ran (a raced-out fold's time until it was stopped counts too)
        "job_seconds": float((ok["end_time"] - ok["start_time"]).sum())
        + float((raced["end_time"] - raced["start_time"]).sum()),
        # what the jobs computed (train + eval seconds, as report.md sums them): a worker's
        # start-up inside its first job's window is not in it
        "compute_s": float((ok["train_seconds"] + ok["eval_seconds"]).sum())
        + float((raced["train_seconds"] + raced["eval_seconds"]).sum()),
        "raced_out": len(raced),
        "best": _best(ok),
        "cpu_mean": cpu_mean,
        "cpu_last20": cpu_last20,
        "checked": int(checked),
        "equal": int(equal),
        "replayed": int(replayed),
        "widened": sum(len(set(s)) > 1 for s in schedules.values()),
        "val_accuracy": float(ok["val_accuracy"].mean()) if not ok.empty else math.nan,
        **{f"stage_{k}": v for k, v in run.stages.items()},
    }


def _best(ok: pd.DataFrame) -> str:
    """The configuration with the best mean validation accuracy over its ok folds."""
    if ok.empty:
        return "-"
    model, scheduler = ok.groupby(["model", "scheduler"])["val_accuracy"].mean().idxmax()
    return f"{model}/{scheduler}"


def racing_lines(table: pd.DataFrame) -> list[str]:
    """Fold racing against the full grid (``racing`` beside ``raynn``): job-seconds saved
    and whether both pick the same best configuration."""
    by = table.set_index("mode")
    if not {"racing", "raynn"} <= set(by.index):
        return []
    full, raced = by.loc["raynn"], by.loc["racing"]
    saved = 1 - raced["compute_s"] / full["compute_s"]
    span = 1 - raced["job_seconds"] / full["job_seconds"]
    same = "the same" if raced["best"] == full["best"] else "a DIFFERENT"
    return [
        f"- fold racing: {int(raced['raced_out'])} folds raced out; job compute (train + eval) "
        f"{raced['compute_s']:.1f} s against the full grid's {full['compute_s']:.1f} s "
        f"({saved:.0%} saved); job spans (start to end) {raced['job_seconds']:.1f} s against "
        f"{full['job_seconds']:.1f} s ({span:.0%}); wall {raced['wall_s']:.1f} s against "
        f"{full['wall_s']:.1f} s; {same} best configuration ({raced['best']}; full grid: "
        f"{full['best']})"
    ]


def summarize(rows: pd.DataFrame, cores: int) -> pd.DataFrame:
    """One row per mode: medians over repeats, the spread of ``wall_s``, the ratios."""
    out = []
    for mode, g in rows.groupby("mode", sort=False):
        row = {"mode": mode, "repeats": len(g), "finished": bool(g["finished"].all())}
        for col in g.columns:
            if col not in ("mode", "repeat", "finished") and pd.api.types.is_numeric_dtype(g[col]):
                row[col] = float(g[col].median())
        row["ok"] = int(g["ok"].min())
        row["best"] = str(g["best"].mode().iloc[0]) if "best" in g else "-"
        row["wall_min"], row["wall_max"] = float(g["wall_s"].min()), float(g["wall_s"].max())
        out.append(row)
    table = pd.DataFrame(out)
    by = table.set_index("mode")
    ref_seconds = by["job_seconds"].get("serial1", math.nan)
    table["efficiency"] = ref_seconds / (cores * table["makespan_s"])
    table["wall_efficiency"] = ref_seconds / (cores * table["wall_s"])
    serial = by["wall_s"].get("serial", math.nan)
    table["speedup_vs_serial"] = serial / table["wall_s"]
    peers = [by["wall_s"][p] for p in PEERS if p in by.index]
    table["vs_best_peer"] = table["wall_s"] / min(peers) if peers else math.nan
    return table


def stage_lines(rows: pd.DataFrame) -> list[str]:
    """Where raynn's fixed overhead goes: its stages, medians over repeats (seconds)."""
    lines = []
    for mode in RAYNN_MODES:
        g = rows[rows["mode"] == mode]
        if g.empty or "stage_data_loaded" not in g:
            continue
        med = g.median(numeric_only=True)
        data, planned = med.get("stage_data_loaded", math.nan), med.get("stage_jobs_planned")
        scheduled = med.get("stage_scheduled", math.nan)
        lines.append(
            f"- `{mode}`: command start to data loaded {data:.2f} s (interpreter, imports, "
            f"dataset, folds); jobs planned {planned - data:.2f} s; probe and cores "
            f"{scheduled - planned:.2f} s; to the first job running "
            f"{med['startup_s'] - scheduled:.2f} s (workers start); last job to exit "
            f"{med['shutdown_s']:.2f} s"
        )
    return lines


def to_markdown(table: pd.DataFrame, rows: pd.DataFrame, info: dict, spec: KFoldSpec) -> str:
    """The summary as a markdown section."""
    cols = [c for c in SUMMARY_COLUMNS if c in table.columns]
    lines = [
        f"### `{spec.name}`: {int(rows['ok'].max())} jobs on {info['cores']} cores, "
        f"{int(table['repeats'].max())} repeat(s), medians",
        "",
        machine_line(info),
        "",
        *markdown_table(table, cols),
    ]
    raced = racing_lines(table)
    if raced:
        lines += ["", *raced]
    stages = stage_lines(rows)
    if stages:
        lines += ["", "Where raynn's fixed overhead goes (medians):", "", *stages]
    return "\n".join(lines) + "\n"


def plot_utilization(run: ModeRun, path: Path) -> None:
    """CPU % over time (mean over cores, and each core) for one mode run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    t0 = run.invoked
    for core, g in run.util.groupby("core"):
        ax.plot(g["time"] - t0, g["percent"], lw=0.6, alpha=0.5, label=f"core {core}")
    if not run.util.empty:
        mean = run.util.groupby("time")["percent"].mean()
        ax.plot(mean.index - t0, mean.values, lw=2, color="black", label="mean over cores")
    if not run.jobs.empty:
        for x in (run.jobs["start_time"].min(), run.jobs["end_time"].max()):
            ax.axvline(x - t0, ls="--", color="grey")
    ax.axvline(run.exited - t0, ls=":", color="red", label="exit")
    ax.set(
        xlabel="seconds since the command started",
        ylabel="CPU %",
        ylim=(0, 105),
        title=f"{run.mode}: CPU utilisation (dashed: first job start, last job end)",
    )
    ax.legend(loc="lower left", fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
