"""How long does planning a large grid take, from the spec to the first job's turn?

Builds digits grids of 20 MLP widths (each its own model label) x 5 schedulers x 10 folds,
with learning-rate draws to reach 1,000, 2,000 and 10,000 jobs, and times each planning
step in-process: the jobs (``prepare``), the probe (``calibrate``, from the probe cache
after the first grid), and for nodes of 2, 16 and 1,024 cores ``cores_per_job: auto``
(``auto_group_sizes``) with the run order it leads to (``raynn.kfold.packing.run_order``:
longest first, or planned when that is shorter); and ``raynn validate SPEC`` as a command,
start to exit. The bars (issue
23): planning a 10,000-job grid takes under 1 s, validating it under 15 s.

    python benchmarks/planning_time.py [--jobs 1000,2000,10000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import yaml

from raynn.kfold.packing import run_order
from raynn.kfold.probe import ProbeCache, auto_group_sizes, calibrate
from raynn.kfold.runner import prepare
from raynn.spec import load_spec

WIDTHS = [16 + 8 * i for i in range(20)]


def grid_spec(jobs: int, folder: Path) -> Path:
    """A spec of ``jobs`` jobs: 20 models x 5 schedulers x 10 folds x ``jobs / 1000`` rates."""
    raw = {
        "kind": "kfold",
        "name": f"plan{jobs}",
        "seed": 0,
        "folds": 10,
        "dataset": {"name": "digits"},
        "models": [{"name": "mlp", "label": f"mlp{w}", "args": {"hidden": [w]}} for w in WIDTHS],
        "schedulers": ["cosine", "warm", "step", "onecycle", "none"],
        "training": {"epochs": 1, "batch_size": 64},
        "scheduling": {"cores_per_job": "auto"},
        "output": {"dir": str(folder / "runs")},
    }
    if jobs > 1000:
        raw["optimizer"] = {"name": "adam", "lr": {"loguniform": [1e-4, 1e-1]}}
        raw["search"] = {"samples": jobs // 1000, "seed": 0}
    path = folder / f"plan{jobs}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="1000,2000,10000")
    args = parser.parse_args()
    print(
        "| jobs | prepare_s | probe_s | auto_2_s | auto_16_s | auto_1024_s | total_s | validate_s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.jobs.split(",")):
            path = grid_spec(n, Path(tmp))
            spec = load_spec(path)
            t0 = time.perf_counter()
            plan = prepare(spec)
            t1 = time.perf_counter()
            jobs, speeds = calibrate(plan.jobs, plan.data, 2, ProbeCache())
            t2 = time.perf_counter()
            auto = []
            for cores in (2, 16, 1024):
                start = time.perf_counter()
                sizes = auto_group_sizes(jobs, speeds, [cores])
                sized = [replace(j, cores=sizes[j.model.label]) for j in jobs]
                run_order(sized, speeds, min(sizes.values()), lambda need, c=cores: c // need)
                auto.append(time.perf_counter() - start)
            total = t2 - t0 + auto[0]
            start = time.perf_counter()
            command = [sys.executable, "-m", "raynn", "validate", str(path)]
            subprocess.run(command, check=True, capture_output=True)
            cells = [t1 - t0, t2 - t1, *auto, total, time.perf_counter() - start]
            print(f"| {len(jobs)} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
