"""Question: what parallel efficiency does this machine itself allow when every core runs its
own single-thread job, with no scheduler at all? That is the ceiling raynn's efficiency bar
(sum of serial1 job times / (cores x makespan) >= 0.85) is measured against.

Runs the first job of a K-fold spec (default: benchmarks/specs/lenet_mnist.yaml, needs MNIST
under $RAYNN_DATA) ``--repeats`` times back to back in one long-lived process with one thread
(alone), then the same in ``cores`` such processes at once, each pinned to its own core
(packed; plain ``multiprocessing``, no Ray). The first job of each process is left out (it
pays the process's warm-up, as a raynn worker's first job does). Ceiling efficiency =
median job time alone / median job time packed; train and evaluation times are reported
apart.

    RAYNN_DATA=/path/to/data python benchmarks/packing_ceiling.py [--spec S] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _one(job, data, core, repeats, barrier, results) -> None:  # noqa: ANN001 - a target
    from raynn.kfold.train import train_job
    from raynn.placement.cores import pin_current_process

    pin_current_process((core,))
    barrier.wait()
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        result = train_job(job, data, threads=1)
        if result.status != "ok":
            raise SystemExit(f"the job failed: {result.error}")
        times.append((time.perf_counter() - t0, result.train_seconds, result.eval_seconds))
    results.put(times[1:])  # the first job pays the process's warm-up


def _run(job, data, cores: list[int], repeats: int) -> list[tuple[float, float, float]]:  # noqa: ANN001
    ctx = mp.get_context("forkserver")
    barrier, results = ctx.Barrier(len(cores)), ctx.Queue()
    procs = [
        ctx.Process(target=_one, args=(job, data, c, repeats, barrier, results)) for c in cores
    ]
    for p in procs:
        p.start()
    got = [t for _ in procs for t in results.get()]
    for p in procs:
        p.join()
    return got


def _median(rows: list[tuple[float, float, float]], i: int) -> float:
    return statistics.median(r[i] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(REPO / "benchmarks/specs/lenet_mnist.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from raynn.kfold.runner import prepare
    from raynn.placement.cores import usable_cpus
    from raynn.spec import load_spec

    plan = prepare(load_spec(args.spec))
    job, data = plan.jobs[0], plan.data
    cores = usable_cpus()
    alone = _run(job, data, cores[:1], args.repeats)
    packed = _run(job, data, cores, args.repeats)
    print(f"{job.job_id}, {args.repeats} jobs per process after a warm-up job, {len(cores)} cores")
    for label, rows in (("alone", alone), (f"packed x{len(cores)}", packed)):
        print(
            f"{label}: job {_median(rows, 0):.2f} s (train {_median(rows, 1):.2f} s, "
            f"eval {_median(rows, 2):.2f} s) over {len(rows)} jobs"
        )
    print(f"ceiling efficiency (alone / packed): {_median(alone, 0) / _median(packed, 0):.3f}")


if __name__ == "__main__":
    main()
