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
* ``racing``: ``raynn run`` with fold racing on (``scheduling.racing``: the spec's settings,
  or the defaults): the grid's clearly worse configurations stop early. Every other mode
  runs the full grid (racing off). Its row is held against ``raynn``'s: the job-seconds
  saved and whether both pick the same best configuration (``best``);
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

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from raynn.bench.common import bench_folder, have_matplotlib, machine
from raynn.bench.kfold_modes import MODES, command, run_mode
from raynn.bench.kfold_summary import (
    References,
    plot_utilization,
    run_row,
    summarize,
    to_markdown,
)
from raynn.errors import RaynnError
from raynn.kfold.runner import Plan, prepare
from raynn.placement.cores import resolve_cores_per_job, usable_cpus
from raynn.runs.results import write_json
from raynn.spec import KFoldSpec
from raynn.spec.checks import to_plain
from raynn.spec.sections import RacingSpec


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
    files = _spec_files(spec, modes, out)
    info = machine()
    cache, cold = out / "cache" / "warm", out / "cache" / "cold"
    probe_s = _warm_probe_cache(plan, cpus, cache) if {"raynn", "racing"} & set(modes) else 0.0
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
                m: command(m, files[m], out / "modes" / m, cores_per_job, workers, timeout)
                for m in modes
            },
        },
    )
    refs = References(plan)
    rows: list[dict[str, Any]] = []
    plot = have_matplotlib("utilisation plots")
    order = sorted(modes, key=lambda m: m not in ("serial1", "serial"))  # references first
    for r in range(repeats):
        for mode in order:
            env = {**os.environ, "RAYNN_CACHE_DIR": str(cache)}
            if mode == "raynn_cold":
                env["RAYNN_CACHE_DIR"] = str(cold / f"r{r}")  # empty every time
            run = run_mode(mode, r, files[mode], out, cpus, cores_per_job, timeout, env)
            if mode in ("serial", "serial1"):
                refs.add(run)
            rows.append(run_row(run, len(plan.jobs), refs))
            if plot and r == 0:
                plot_utilization(run, out / f"utilization_{mode}.png")
            table = _write_summary(rows, len(cpus), info, spec, out)
            if progress:
                _say(mode, r, repeats, rows[-1])
    return table, out


def _spec_files(spec: KFoldSpec, modes: Sequence[str], out: Path) -> dict[str, Path]:
    """Write the spec the modes run (racing off; for mode ``racing``, racing on) into
    ``out``; each mode's file."""
    spec_file, racing_file = out / "spec.json", out / "spec_racing.json"
    full = spec.to_dict()
    full["scheduling"]["racing"] = None  # every mode but racing runs the whole grid
    write_json(spec_file, full)
    full["scheduling"]["racing"] = to_plain(spec.scheduling.racing or RacingSpec())
    write_json(racing_file, full)
    return {m: racing_file if m == "racing" else spec_file for m in modes}


def _write_summary(
    rows: list[dict[str, Any]], cpus: int, info: dict[str, Any], spec: KFoldSpec, out: Path
) -> pd.DataFrame:
    """Write the runs so far and their summary (a bench cut short keeps what it measured)."""
    table = summarize(pd.DataFrame(rows), cpus)
    pd.DataFrame(rows).to_parquet(out / "runs.parquet")
    table.to_parquet(out / "summary.parquet")
    (out / "summary.md").write_text(to_markdown(table, pd.DataFrame(rows), info, spec))
    return table


def _say(mode: str, r: int, repeats: int, last: dict[str, Any]) -> None:
    """One line on a run just done."""
    print(
        f"[bench kfold] {mode} (repeat {r + 1}/{repeats}): "
        f"wall {last['wall_s']:.1f} s, makespan {last['makespan_s']:.1f} s, "
        f"{last['equal']}/{last['checked']} equal",
        flush=True,
    )


def _warm_probe_cache(plan: Plan, cpus: list[int], cache: Path) -> float:
    """Probe the spec's models into ``cache`` (what a machine's first raynn run leaves)."""
    from raynn.kfold.probe import ProbeCache, ProbeReport, calibrate

    report = ProbeReport()
    calibrate(plan.jobs, plan.data, len(cpus), ProbeCache(cache / "probe.json"), report)
    return report.seconds


__all__ = ["MODES", "bench_kfold", "summarize"]
