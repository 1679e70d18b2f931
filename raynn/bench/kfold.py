"""``raynn bench kfold``: one job list, run serially, by raynn and by peer tools, side by side.

Question answered: how much faster than the serial baseline, and than the tools people would
use instead, does raynn finish the same K-fold jobs, how busy does it keep the cores, and
does it change any job's result?

Modes: ``serial`` (one job at a time, all cores to torch), ``serial1`` (one at a time, one
thread: the efficiency reference), ``raynn`` (the Ray executor), ``tune`` (Ray Tune, one trial
per job) and ``processes`` (one uncapped process per job, as the original project did).
"""

from __future__ import annotations

import math
import platform
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raynn.errors import RaynnError
from raynn.kfold import Plan, prepare, schedule
from raynn.results import UTILIZATION_SCHEMA, read_table, write_json, write_table
from raynn.scheduler.cores import resolve_cores_per_job, usable_cpus
from raynn.scheduler.executor import RayExecutor, SerialExecutor
from raynn.scheduler.monitor import Progress, UtilizationSampler
from raynn.spec import KFoldSpec

MODES = ("serial", "serial1", "raynn", "tune", "processes")
METRICS = ["val_loss", "val_accuracy", "test_loss", "test_accuracy"]


@dataclass
class ModeRun:
    """One mode's run: its job rows, its utilisation samples and its timestamps."""

    mode: str
    run_dir: Path
    invoked: float
    exited: float
    finished: bool
    jobs: pd.DataFrame
    util: pd.DataFrame


def _execute(
    mode: str,
    plan: Plan,
    run_dir: Path,
    cpus: list[int],
    cores_per_job: int,
    timeout: float | None,
    progress: bool,
) -> bool:
    from raynn.bench.peers import run_processes, run_tune

    spec = plan.spec
    view = Progress(mode, spec.training.epochs, enabled=progress)
    kwargs = {
        "scheduling": spec.scheduling,
        "progress": view,
    }
    if mode in ("serial", "serial1", "raynn"):
        ex = (
            RayExecutor(num_cpus=len(cpus))
            if mode == "raynn"
            else SerialExecutor(threads=1 if mode == "serial1" else len(cpus))
        )
        try:
            jobs, _ = schedule(ex, spec, plan.jobs, plan.data)
            ex.execute(jobs, plan.data, str(run_dir), **kwargs)
        finally:
            ex.close()
        return True
    if mode == "tune":
        run_tune(plan.jobs, plan.data, run_dir, cores_per_job, len(cpus))
        return True
    return run_processes(plan.jobs, plan.data, run_dir, timeout)


def run_mode(
    mode: str,
    plan: Plan,
    out: Path,
    cpus: list[int],
    cores_per_job: int,
    timeout: float | None = None,
    progress: bool = True,
    sample_interval: float = 0.25,
) -> ModeRun:
    """Run every job of ``plan`` in ``mode``, sampling CPU use of ``cpus`` meanwhile."""
    run_dir = out / "modes" / mode
    run_dir.mkdir(parents=True, exist_ok=True)
    sampler = UtilizationSampler(socket.gethostname(), sample_interval)
    sampler.start()
    invoked = time.time()
    try:
        finished = _execute(mode, plan, run_dir, cpus, cores_per_job, timeout, progress)
    finally:
        exited = time.time()
        rows = [r for r in sampler.stop() if r["core"] in set(cpus)]
        write_table(run_dir / "utilization" / "bench.parquet", rows, UTILIZATION_SCHEMA)
    jobs = read_table(run_dir, "jobs")
    util = pd.DataFrame(rows, columns=["node", "time", "core", "percent"])
    return ModeRun(mode, run_dir, invoked, exited, finished, jobs, util)


def _util_stats(util: pd.DataFrame, start: float, end: float) -> dict[str, float]:
    window = util[(util["time"] >= start) & (util["time"] <= end)]
    per_sample = window.groupby("time")["percent"].mean()
    if per_sample.empty:
        return {"cpu_mean": math.nan, "cpu_p10": math.nan, "cpu_last20": math.nan}
    tail = per_sample[per_sample.index >= end - 0.2 * (end - start)]
    return {
        "cpu_mean": float(per_sample.mean()),
        "cpu_p10": float(np.percentile(per_sample.to_numpy(), 10)),
        "cpu_last20": float(tail.mean()) if not tail.empty else math.nan,
    }


def summarize(runs: Sequence[ModeRun], n_jobs: int, cores: int) -> pd.DataFrame:
    """One row per mode: makespan, speedup, efficiency, utilisation, metric parity."""
    by_mode = {r.mode: r for r in runs}
    ref = by_mode.get("serial1")
    ref_jobs = ref.jobs.set_index("job_id") if ref is not None and not ref.jobs.empty else None
    serial1_seconds = (
        float((ref.jobs["end_time"] - ref.jobs["start_time"]).sum())
        if ref_jobs is not None
        else math.nan
    )
    rows = []
    for r in runs:
        ok = r.jobs[r.jobs["status"] == "ok"] if not r.jobs.empty else r.jobs
        row: dict[str, Any] = {
            "mode": r.mode,
            "jobs": n_jobs,
            "ok": len(ok),
            "finished": bool(r.finished and len(ok) == n_jobs),
        }
        if r.jobs.empty:
            first = last = r.exited
        else:
            first, last = float(r.jobs["start_time"].min()), float(r.jobs["end_time"].max())
        # a mode that did not finish every job (timeout, failures) has no makespan: inf
        row["makespan_s"] = last - first if row["finished"] else math.inf
        row["wall_s"] = r.exited - r.invoked
        row["startup_s"] = first - r.invoked
        row["shutdown_s"] = r.exited - last
        row.update(_util_stats(r.util, first, last if row["finished"] else r.exited))
        row["efficiency"] = serial1_seconds / (cores * row["makespan_s"])
        if ref_jobs is not None and not ok.empty:
            mine = ok.set_index("job_id")[METRICS]
            common = mine.index.intersection(ref_jobs.index)
            same = (mine.loc[common] == ref_jobs.loc[common, METRICS]).all(axis=1)
            row["metrics_equal_serial1"] = int(same.sum())
        else:
            row["metrics_equal_serial1"] = -1
        epochs = read_table(r.run_dir, "epochs")
        row["widened_jobs"] = (
            int((epochs.groupby("job_id")["threads"].agg(lambda t: t.max() > t.iloc[0])).sum())
            if not epochs.empty
            else 0
        )
        row["val_accuracy"] = float(ok["val_accuracy"].mean()) if not ok.empty else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    serial = table.loc[table["mode"] == "serial", "makespan_s"]
    table["speedup_vs_serial"] = (
        float(serial.iloc[0]) / table["makespan_s"] if not serial.empty else math.nan
    )
    return table


def plot_utilization(run: ModeRun, path: Path) -> None:
    """CPU % over time (mean over cores, and each core) for one mode, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    if not run.util.empty:
        t0 = run.invoked
        for _, g in run.util.groupby("core"):
            ax.plot(g["time"] - t0, g["percent"], lw=0.6, alpha=0.4)
        mean = run.util.groupby("time")["percent"].mean()
        ax.plot(mean.index - t0, mean.values, lw=2, color="black", label="mean over cores")
        if not run.jobs.empty:
            ax.axvline(run.jobs["start_time"].min() - t0, ls="--", color="grey")
            ax.axvline(run.jobs["end_time"].max() - t0, ls="--", color="grey")
    ax.set(
        xlabel="seconds since invocation",
        ylabel="CPU %",
        ylim=(0, 105),
        title=f"{run.mode}: CPU utilisation",
    )
    if not run.util.empty:
        ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine() -> dict[str, Any]:
    """CPU model, usable cores and the commit, for RESULTS.md."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "host": socket.gethostname(),
        "cpu": model,
        "cores": len(usable_cpus()),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
    }


def to_markdown(table: pd.DataFrame, info: dict[str, Any], spec: KFoldSpec) -> str:
    """The summary as a markdown section."""
    cols = [
        "mode",
        "finished",
        "ok",
        "makespan_s",
        "speedup_vs_serial",
        "efficiency",
        "cpu_mean",
        "cpu_p10",
        "cpu_last20",
        "startup_s",
        "shutdown_s",
        "metrics_equal_serial1",
        "widened_jobs",
        "val_accuracy",
    ]
    lines = [
        f"### `{spec.name}`: {table['jobs'].iloc[0]} jobs on {info['cores']} cores",
        "",
        machine_line(info),
        "",
        *markdown_table(table, cols),
    ]
    return "\n".join(lines) + "\n"


def machine_line(info: dict[str, Any]) -> str:
    """The machine as one line of a summary: CPU, host, date, commit (from :func:`machine`)."""
    return f"{info['cpu']} ({info['host']}), {info['date']}, commit {info['commit']}"


def markdown_table(
    table: pd.DataFrame, cols: Sequence[str], formats: dict[str, str] | None = None
) -> list[str]:
    """``table[cols]`` as markdown lines; floats as ``{:.3f}`` unless ``formats`` says."""
    formats = formats or {}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            cells.append(formats.get(c, "{:.3f}").format(v) if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def bench_folder(output: str | Path, name: str) -> Path:
    """Create and return a fresh ``<output>/<name>-<time>/`` for one bench run."""
    out = Path(output) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=False)
    return out


def have_matplotlib(what: str) -> bool:
    """Whether matplotlib imports; if not, say which plots (``what``) are skipped."""
    try:
        import matplotlib  # noqa: F401 - plots are optional where matplotlib is missing
    except ImportError:
        print(f"matplotlib is not installed: no {what}", flush=True)
        return False
    return True


def bench_kfold(
    spec: KFoldSpec,
    modes: Sequence[str],
    output: str | Path = "bench",
    num_cpus: int | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, Path]:
    """Run ``spec``'s jobs in every mode; write and return the summary table and its folder."""
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise RaynnError(f"unknown bench mode(s) {unknown}; valid: {', '.join(MODES)}")
    plan = prepare(spec)
    cpus = usable_cpus(num_cpus)
    cores_per_job = resolve_cores_per_job(spec.scheduling.cores_per_job, len(plan.jobs), len(cpus))
    out = bench_folder(output, spec.name)
    info = machine()
    write_json(
        out / "bench.json",
        {
            "spec": spec.to_dict(),
            "modes": list(modes),
            "machine": info,
            "cores_per_job": cores_per_job,
        },
    )
    runs = []
    plot = have_matplotlib("utilisation plots")
    for mode in modes:
        run = run_mode(mode, plan, out, cpus, cores_per_job, timeout, progress)
        if plot:
            plot_utilization(run, out / f"utilization_{mode}.png")
        runs.append(run)
        # the summary so far: a bench cut short still leaves what it measured
        table = summarize(runs, len(plan.jobs), len(cpus))
        table.to_parquet(out / "summary.parquet")
        (out / "summary.md").write_text(to_markdown(table, info, spec))
        print(f"[bench kfold] {mode}: makespan {table['makespan_s'].iloc[-1]:.1f} s", flush=True)
    return table, out
