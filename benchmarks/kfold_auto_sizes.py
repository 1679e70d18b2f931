"""Question: does `cores_per_job: auto`, which gives each model its own cores per job, finish
a mixed grid no later than the best single size for every job would?

Runs the same spec (default: benchmarks/specs/mixed_synthetic_cifar.yaml, offline) through
the Ray executor once per setting, back to back: `cores_per_job` = 1, 2, 4 (those that fit
this machine) and `auto`, ``--repeats`` times interleaved. Reports each setting's median
makespan (first job start to last job end), wall time, mean validation accuracy and, for
`auto`, the sizes it chose per model. Bar: auto's makespan <= 1.05 x the best single size's.

On 2 cores the probe usually picks 1 for every model, so auto and 1 are the same
configuration and their difference is run-to-run noise (the script says so); the question
has a sharper answer on many cores, where a model that scales gets 2 or 4.

    python benchmarks/kfold_auto_sizes.py [--spec S] [--repeats 2] [--output bench]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BAR = 1.05


def _run(spec, setting, output: Path) -> dict:
    from raynn.kfold.executors.factory import RayExecutor
    from raynn.kfold.runner import run

    spec = dataclasses.replace(
        spec, scheduling=dataclasses.replace(spec.scheduling, cores_per_job=setting)
    )
    start = time.time()
    result = run(spec, executor=RayExecutor(), output=str(output), progress=False)
    wall = time.time() - start
    jobs = result.jobs
    last = json.loads((result.run_dir / "run.json").read_text())["runs"][-1]
    return {
        "cores_per_job": str(setting),
        "ok": int((jobs["status"] == "ok").sum()),
        "jobs": len(jobs),
        "makespan_s": float(jobs["end_time"].max() - jobs["start_time"].min()),
        "wall_s": wall,
        "val_accuracy": float(jobs["val_accuracy"].mean()),
        "cores_by_model": json.dumps(last.get("cores_by_model") or {}),
        "run_dir": str(result.run_dir),
    }


def main() -> int:
    from raynn.bench.common import machine, machine_line, markdown_table
    from raynn.placement.cores import usable_cpus
    from raynn.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(REPO / "benchmarks/specs/mixed_synthetic_cifar.yaml"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--output", default=str(REPO / "bench"))
    args = parser.parse_args()
    spec = load_spec(args.spec)
    cores = len(usable_cpus())
    out = Path(args.output) / f"auto_sizes-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    rows = []
    settings = [s for s in (1, 2, 4) if s <= cores] + ["auto"]
    for r in range(args.repeats):  # interleaved, so load drift hits every setting alike
        for setting in settings:
            print(f"[auto sizes] cores_per_job={setting}, repeat {r + 1} ...", flush=True)
            rows.append(_run(spec, setting, out / "runs"))
            print(f"[auto sizes] cores_per_job={setting}: makespan {rows[-1]['makespan_s']:.1f} s")
    runs = pd.DataFrame(rows)
    runs.to_parquet(out / "runs.parquet", index=False)
    table = (
        runs.groupby("cores_per_job", sort=False)
        .agg(
            repeats=("ok", "size"),
            ok=("ok", "min"),
            jobs=("jobs", "first"),
            makespan_s=("makespan_s", "median"),
            wall_s=("wall_s", "median"),
            val_accuracy=("val_accuracy", "median"),
            cores_by_model=("cores_by_model", "last"),
        )
        .reset_index()
    )
    table.to_parquet(out / "summary.parquet", index=False)
    info = machine()
    best = float(table.loc[table["cores_per_job"] != "auto", "makespan_s"].min())
    ratio = float(table.loc[table["cores_per_job"] == "auto", "makespan_s"].iloc[0]) / best
    text = (
        f"### `{spec.name}`: cores_per_job settings on {cores} cores\n\n"
        f"{machine_line(info)}\n\n"
        + "\n".join(markdown_table(table, list(table.columns)))
        + f"\n\nauto makespan / best single size: {ratio:.3f} (bar <= {BAR})\n"
    )
    auto = table[table["cores_per_job"] == "auto"]
    chosen = set(json.loads(auto["cores_by_model"].iloc[0]).values())
    if len(chosen) == 1:
        text += (
            f"\nauto chose {chosen.pop()} for every model: the same configuration as that "
            "single size, so their difference is run-to-run noise.\n"
        )
    (out / "summary.md").write_text(text)
    print(__doc__.splitlines()[0])
    print(text)
    print(f"{'PASS' if ratio <= BAR else 'MISS'}  auto / best single size <= {BAR}: {ratio:.3f}")
    print(f"results: {out}")
    return 0 if ratio <= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
