"""``raynn bench kfold``: the same jobs through raynn and through the tools people use instead.

Question answered: from typing the command to getting the prompt back, how much sooner than
one-job-at-a-time and than the best a competent user would do instead does raynn finish the
same K-fold jobs, how busy does it keep the cores, and does it change any job's result?

Every mode is a command of its own, run as a subprocess and timed from its start to its
exit (``wall_s``, the headline): imports, data loading, start-up and shutdown included.
``makespan_s`` (first job start to last job end) stands beside it, and the fixed overhead
(``startup_s``: command start to the first job; ``shutdown_s``: last job end to exit) is
reported for every mode. Modes:

* ``serial``: ``raynn run --serial``, one job at a time, every core to torch;
* ``serial1``: the same at one thread: the reference for efficiency and for results;
* ``raynn``: ``raynn run``, as a user runs it (the local executor here), with the probe
  cache warm (the harness probes once before the modes: ``probe_s`` in ``bench.json``);
* ``raynn_cold``: the same with an empty probe cache (a machine's first run);
* ``raynn_ray``: ``raynn run --executor ray`` on an embedded local Ray;
* the peers of :mod:`raynn.bench.peers`: ``pool`` (joblib/loky with thread caps), ``tune``
  (Ray Tune, ``reuse_actors=True``), ``tune_fresh`` (without), ``multi_instance`` (a static
  pinned split, like ``run_cpu --ninstances``) and ``processes`` (the original project's
  uncapped way, one process per job).

Results: every mode's job metrics are compared, bit for bit, with a serial run of the same
job at the same thread counts: ``serial1``'s (one thread) or ``serial``'s (every core); a job
that ran at other counts (tail widening, ``cores_per_job: auto``) is replayed in this
process with its own per-epoch thread counts (``replayed``). ``checked`` counts the jobs
compared (none when neither serial mode ran), ``equal`` those that match.

With ``--repeats R`` the modes run R times, interleaved; the summary gives medians and the
spread of ``wall_s``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from raynn.bench.common import (
    bench_folder,
    have_matplotlib,
    machine,
    machine_line,
    markdown_table,
)
from raynn.errors import RaynnError
from raynn.kfold import Plan, prepare
from raynn.results import read_table, write_json
from raynn.scheduler.cores import resolve_cores_per_job, usable_cpus
from raynn.scheduler.monitor import UtilizationSampler
from raynn.spec import KFoldSpec

MODES = (
    "serial",
    "serial1",
    "raynn",
    "raynn_cold",
    "raynn_ray",
    "pool",
    "tune",
    "tune_fresh",
    "multi_instance",
    "processes",
)
DEFAULT_MODES = ("serial", "serial1", "raynn", "pool", "tune", "multi_instance")
PEERS = ("pool", "tune", "multi_instance")  # the competent peers raynn is held against
RAYNN_MODES = ("raynn", "raynn_cold", "raynn_ray")
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
    "speedup_vs_serial",
    "efficiency",
    "wall_efficiency",
    "cpu_mean",
    "cpu_last20",
    "checked",
    "equal",
    "replayed",
    "val_accuracy",
]


@dataclass
class ModeRun:
    """One run of one mode: its command, its timestamps, its rows and the CPU meanwhile."""

    mode: str
    repeat: int
    run_dir: Path
    invoked: float
    exited: float
    returncode: int
    timed_out: bool
    jobs: pd.DataFrame
    epochs: pd.DataFrame
    util: pd.DataFrame
    stages: dict[str, float] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)


def command(
    mode: str, spec_file: Path, run_root: Path, cores_per_job: int, workers: int, timeout: float
) -> list[str]:
    """The command line of ``mode`` (what a user would type)."""
    py = [sys.executable, "-m"]
    if mode in ("serial", "serial1", *RAYNN_MODES):
        cmd = py + ["raynn", "run", str(spec_file), "--output", str(run_root), "--no-progress"]
        if mode == "serial":
            cmd.append("--serial")
        elif mode == "serial1":
            cmd += ["--serial", "--threads", "1"]
        elif mode == "raynn_ray":
            cmd += ["--executor", "ray"]
        return cmd
    cmd = py + ["raynn.bench.peers", mode, "--spec", str(spec_file), "--out", str(run_root)]
    cmd += ["--cores-per-job", str(cores_per_job), "--workers", str(workers)]
    if mode == "processes":
        cmd += ["--timeout", str(timeout)]
    return cmd


def _run_dir(mode: str, root: Path) -> Path:
    if mode in ("serial", "serial1", *RAYNN_MODES):  # raynn run makes <root>/<name>-<time>/
        found = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        return found[-1] if found else root
    return root


def run_mode(
    mode: str,
    repeat: int,
    spec_file: Path,
    out: Path,
    cpus: list[int],
    cores_per_job: int,
    timeout: float,
    env: dict[str, str],
    sample_interval: float = 0.25,
) -> ModeRun:
    """Run ``mode``'s command once, sampling the CPU use of ``cpus`` meanwhile."""
    root = out / "modes" / f"{mode}-r{repeat}"
    root.mkdir(parents=True, exist_ok=True)
    workers = max(1, len(cpus) // cores_per_job)
    cmd = command(mode, spec_file, root, cores_per_job, workers, timeout)
    if len(cpus) < len(usable_cpus()):
        cmd = ["taskset", "-c", ",".join(map(str, cpus)), *cmd]
    log = out / "logs" / f"{mode}-r{repeat}.log"
    log.parent.mkdir(exist_ok=True)
    sampler = UtilizationSampler("bench", sample_interval)
    sampler.start()
    with log.open("wb") as fh:
        invoked = time.time()
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            code = proc.wait(timeout=timeout + 30)
            timed_out = code == 3 and mode == "processes"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code, timed_out = proc.wait(), True
        exited = time.time()
    rows = [r for r in sampler.stop() if r["core"] in set(cpus)]
    run_dir = _run_dir(mode, root)
    stages, probe = {}, {}
    try:
        attempt = json.loads((run_dir / "run.json").read_text())["runs"][-1]
        stages, probe = attempt.get("stages", {}), attempt.get("probe", {})
    except (OSError, ValueError, KeyError, IndexError):
        pass
    return ModeRun(
        mode,
        repeat,
        run_dir,
        invoked,
        exited,
        code,
        timed_out,
        read_table(run_dir, "jobs"),
        read_table(run_dir, "epochs"),
        pd.DataFrame(rows, columns=["node", "time", "core", "percent"]),
        stages,
        probe,
    )


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
            from raynn.training import train_job

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


def run_row(run: ModeRun, n_jobs: int, refs: References) -> dict[str, Any]:
    """One run's figures (before medians)."""
    ok = run.jobs[run.jobs["status"] == "ok"] if not run.jobs.empty else run.jobs
    finished = run.returncode == 0 and not run.timed_out and len(ok) == n_jobs
    first = float(run.jobs["start_time"].min()) if not run.jobs.empty else run.exited
    last = float(run.jobs["end_time"].max()) if not run.jobs.empty else run.exited
    cpu_mean, cpu_last20 = _util_stats(run.util, run.invoked, run.exited, first, last)
    schedules = _schedules(run)
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
        "job_seconds": float((ok["end_time"] - ok["start_time"]).sum()),
        "cpu_mean": cpu_mean,
        "cpu_last20": cpu_last20,
        "checked": int(checked),
        "equal": int(equal),
        "replayed": int(replayed),
        "widened": sum(len(set(s)) > 1 for s in schedules.values()),
        "val_accuracy": float(ok["val_accuracy"].mean()) if not ok.empty else math.nan,
        **{f"stage_{k}": v for k, v in run.stages.items()},
    }


def summarize(rows: pd.DataFrame, cores: int) -> pd.DataFrame:
    """One row per mode: medians over repeats, the spread of ``wall_s``, the ratios."""
    out = []
    for mode, g in rows.groupby("mode", sort=False):
        row = {"mode": mode, "repeats": len(g), "finished": bool(g["finished"].all())}
        for col in g.columns:
            if col not in ("mode", "repeat", "finished") and pd.api.types.is_numeric_dtype(g[col]):
                row[col] = float(g[col].median())
        row["ok"] = int(g["ok"].min())
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


def bench_kfold(
    spec: KFoldSpec,
    modes: Sequence[str],
    output: str | Path = "bench",
    num_cpus: int | None = None,
    timeout: float | None = None,
    progress: bool = True,
    repeats: int = 1,
) -> tuple[pd.DataFrame, Path]:
    """Run ``spec``'s jobs in every mode, ``repeats`` times interleaved; write the summary."""
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise RaynnError(f"unknown bench mode(s) {unknown}; valid: {', '.join(MODES)}")
    if repeats < 1:
        raise RaynnError(f"--repeats must be at least 1, got {repeats}")
    timeout = timeout or 1800.0
    plan = prepare(spec)
    cpus = usable_cpus(num_cpus)
    cores_per_job = resolve_cores_per_job(spec.scheduling.cores_per_job, len(plan.jobs), len(cpus))
    out = bench_folder(output, spec.name)
    spec_file = out / "spec.json"
    write_json(spec_file, spec.to_dict())
    info = machine()
    cache, cold = out / "cache" / "warm", out / "cache" / "cold"
    probe_s = _warm_probe_cache(plan, cpus, cache) if "raynn" in modes else 0.0
    workers = max(1, len(cpus) // cores_per_job)  # as run_mode gives every peer
    write_json(
        out / "bench.json",
        {
            "spec": spec.to_dict(),
            "modes": list(modes),
            "repeats": repeats,
            "machine": info,
            "cores_per_job": cores_per_job,
            "probe_s": probe_s,
            "commands": {
                m: command(m, spec_file, out / "modes" / m, cores_per_job, workers, timeout)
                for m in modes
            },
        },
    )
    refs = References(plan)
    runs: list[ModeRun] = []
    rows: list[dict[str, Any]] = []
    plot = have_matplotlib("utilisation plots")
    order = sorted(modes, key=lambda m: m not in ("serial1", "serial"))  # references first
    for r in range(repeats):
        for mode in order:
            env = {**os.environ, "RAYNN_CACHE_DIR": str(cache)}
            if mode == "raynn_cold":
                env["RAYNN_CACHE_DIR"] = str(cold / f"r{r}")  # empty every time
            run = run_mode(mode, r, spec_file, out, cpus, cores_per_job, timeout, env)
            runs.append(run)
            if mode in ("serial", "serial1"):
                refs.add(run)
            rows.append(run_row(run, len(plan.jobs), refs))
            if plot and r == 0:
                plot_utilization(run, out / f"utilization_{mode}.png")
            table = summarize(pd.DataFrame(rows), len(cpus))
            pd.DataFrame(rows).to_parquet(out / "runs.parquet")
            table.to_parquet(out / "summary.parquet")
            (out / "summary.md").write_text(to_markdown(table, pd.DataFrame(rows), info, spec))
            if progress:
                last = rows[-1]
                print(
                    f"[bench kfold] {mode} (repeat {r + 1}/{repeats}): "
                    f"wall {last['wall_s']:.1f} s, makespan {last['makespan_s']:.1f} s, "
                    f"{last['equal']}/{last['checked']} equal",
                    flush=True,
                )
    return table, out


def _warm_probe_cache(plan: Plan, cpus: list[int], cache: Path) -> float:
    """Probe the spec's models into ``cache`` (what a machine's first raynn run leaves)."""
    from raynn.scheduler.probe import ProbeCache, ProbeReport, calibrate

    report = ProbeReport()
    calibrate(plan.jobs, plan.data, len(cpus), ProbeCache(cache / "probe.json"), report)
    return report.seconds


__all__ = ["MODES", "bench_kfold", "summarize"]
