"""The modes of ``raynn bench kfold`` (:mod:`raynn.bench.kfold`): each one's command line,
and one timed run of it (:func:`run_mode`) with the CPU use sampled meanwhile."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from raynn.bench.common import run_group
from raynn.bench.names import KFOLD_DEFAULT, KFOLD_MODES
from raynn.kfold.tables import JOBS_SCHEMA  # noqa: F401 - registers the tables' schemas
from raynn.placement.cores import usable_cpus
from raynn.placement.monitor import UtilizationSampler
from raynn.runs.results import read_table

MODES = tuple(KFOLD_MODES)
DEFAULT_MODES = KFOLD_DEFAULT
PEERS = ("pool", "tune", "multi_instance")  # the competent peers raynn is held against
RAYNN_MODES = ("raynn", "raynn_cold", "raynn_ray", "racing")  # ``raynn run`` itself


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
    """The command line of ``mode`` (what a user would type; ``racing`` is ``raynn run`` of
    the spec with ``scheduling.racing`` on)."""
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
        code, timed_out = run_group(cmd, fh, env, timeout + 30)
        timed_out = timed_out or (code == 3 and mode == "processes")
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
