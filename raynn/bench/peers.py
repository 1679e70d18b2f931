"""The tools a competent user would use instead of raynn, running the very same jobs.

Each peer is a command of its own (``python -m raynn.bench.peers MODE --spec S --out DIR``),
so the harness times it as it times ``raynn run``: from the command's start to its exit.
Every peer trains with raynn's own :func:`raynn.kfold.train.train_job` (the same jobs, seeds and
numbers) and writes its rows through :class:`~raynn.kfold.collector.ResultsCollector`; only the way
the jobs are spread over the cores differs. They are set up at their best:

* ``pool``: a joblib/loky process pool, one task per job, ``n_jobs`` = the core groups and
  ``inner_max_num_threads`` = cores per job (thread caps, no oversubscription); results are
  written as they arrive.
* ``tune``: Ray Tune, one trial per job, ``{"cpu": cores_per_job}`` per trial, at most one
  trial per core group at once, ``reuse_actors=True`` (trial actors live across trials);
  torch threads capped to the trial's CPUs.
* ``tune_fresh``: the same with ``reuse_actors=False`` (a fresh actor per trial).
* ``multi_instance``: a static split like ``torch.backends.xeon.run_cpu --ninstances N``: N
  processes, each started under ``taskset`` on its own cores with ``OMP_NUM_THREADS`` set,
  each training a fixed share of the jobs (``jobs[rank::N]``) one after another. The
  launcher is this light script (``run_cpu`` itself imports torch before launching).
* ``processes``: the original project's way, not a competent one: one
  ``torch.multiprocessing`` process per job, all at once, torch's default thread count (no
  caps). The processes are forked from a fresh fork server: forking a process whose OpenMP
  pool has run hangs the child.

Jobs are taken in the order :func:`raynn.kfold.runner.prepare` gives them (longest expected first,
by multiply-accumulates), as a user reading raynn's job list would.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PEERS = ("pool", "tune", "tune_fresh", "multi_instance", "processes")


def _plan(spec_path: str) -> Any:
    from raynn.kfold.runner import prepare
    from raynn.spec import load_spec

    return prepare(load_spec(spec_path))


def _train(job: Any, data: Any, threads: int | None, worker: str) -> Any:
    """One job, as every peer trains it: raynn's train_job, failures recorded alike."""
    import socket

    from raynn.kfold.rows import JobResult
    from raynn.kfold.train import train_job

    try:
        result = train_job(job, data, threads=threads)
    except Exception as exc:  # noqa: BLE001 - recorded like raynn records it
        result = JobResult.failed(job, f"{type(exc).__name__}: {exc}")
    result.node, result.worker = socket.gethostname(), worker
    return result


def _pool_task(job: Any, data: Any, threads: int) -> Any:
    return _train(job, data, threads, f"loky-{os.getpid()}")


def run_pool(spec_path: str, out: str, cores_per_job: int, workers: int) -> None:
    """joblib/loky: ``workers`` processes, ``cores_per_job`` threads each, a task per job."""
    from joblib import Parallel, delayed, parallel_config

    from raynn.kfold.collector import ResultsCollector

    plan = _plan(spec_path)
    collector = ResultsCollector(out)
    with parallel_config(backend="loky", inner_max_num_threads=cores_per_job):
        tasks = (delayed(_pool_task)(job, plan.data, cores_per_job) for job in plan.jobs)
        for result in Parallel(n_jobs=workers, return_as="generator_unordered")(tasks):
            collector.write_job(result)
    collector.close()


def run_tune(spec_path: str, out: str, cores_per_job: int, workers: int, reuse: bool) -> None:
    """Ray Tune: one trial per job, ``{"cpu": cores_per_job}``, ``reuse_actors=reuse``."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no progress tables on stdout
    from ray import tune

    from raynn.placement.session import connect

    plan = _plan(spec_path)
    by_id = {j.job_id: j for j in plan.jobs}
    # Ray as a Tune user starts it: its own worker priority (nice 15), not raynn's
    connect("local", workers * cores_per_job, system_config={})

    def trainable(config: dict, data: Any) -> dict:
        from raynn.kfold.collector import ResultsCollector

        result = _train(by_id[config["job_id"]], data, cores_per_job, f"tune-{os.getpid()}")
        collector = ResultsCollector(out, shared=True)  # trials write at once
        collector.write_job(result)
        collector.close()
        return {"done": 1}

    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(trainable, data=plan.data), {"cpu": cores_per_job}
        ),
        param_space={"job_id": tune.grid_search(list(by_id))},
        tune_config=tune.TuneConfig(max_concurrent_trials=workers, reuse_actors=reuse),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="raynn-tune-"), verbose=0),
    )
    tuner.fit()


def run_instance(spec_path: str, out: str, rank: int, of: int, threads: int) -> None:
    """One instance of ``multi_instance``: jobs ``rank, rank + of, ...``, one at a time."""
    from raynn.kfold.collector import ResultsCollector

    plan = _plan(spec_path)
    collector = ResultsCollector(out, shared=True)  # the other instances write too
    for job in plan.jobs[rank::of]:
        collector.write_job(_train(job, plan.data, threads, f"instance-{rank}"))
    collector.close()


def run_multi_instance(spec_path: str, out: str, cores_per_job: int, workers: int) -> None:
    """``workers`` instances, each pinned (taskset) to ``cores_per_job`` cores of its own."""
    cpus = sorted(os.sched_getaffinity(0))
    procs = []
    for rank in range(workers):
        cores = ",".join(str(c) for c in cpus[rank * cores_per_job : (rank + 1) * cores_per_job])
        env = {**os.environ, "OMP_NUM_THREADS": str(cores_per_job)}
        cmd = ["taskset", "-c", cores, sys.executable, "-m", "raynn.bench.peers", "instance"]
        cmd += ["--spec", spec_path, "--out", out, "--rank", str(rank), "--of", str(workers)]
        cmd += ["--cores-per-job", str(cores_per_job)]
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"an instance failed: exit codes {codes}")


def _one_process(job: Any, data: Any, out: str, worker: str) -> None:
    from raynn.kfold.collector import ResultsCollector

    collector = ResultsCollector(out, shared=True)  # the other jobs' processes write too
    collector.write_job(_train(job, data, None, worker))
    collector.close()


def run_processes(spec_path: str, out: str, timeout: float | None) -> bool:
    """One process per job, all at once, no thread caps. False if ``timeout`` hit."""
    import torch.multiprocessing as mp

    plan = _plan(spec_path)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["raynn.bench.peers", "raynn.kfold.train"])
    procs = [
        ctx.Process(target=_one_process, args=(j, plan.data, out, f"p{i}"))
        for i, j in enumerate(plan.jobs)
    ]
    for p in procs:
        p.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    finished = True
    for p in procs:
        p.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        finished = finished and not p.is_alive()
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return finished


def main(argv: list[str] | None = None) -> int:
    """``python -m raynn.bench.peers MODE ...``: run one peer; exit 0, or 3 on a timeout."""
    p = argparse.ArgumentParser(prog="python -m raynn.bench.peers", description=__doc__)
    p.add_argument("mode", choices=[*PEERS, "instance"])
    p.add_argument("--spec", required=True, help="a K-fold spec file")
    p.add_argument("--out", required=True, help="the run directory the rows go to")
    p.add_argument("--cores-per-job", type=int, default=1)
    p.add_argument("--workers", type=int, default=None, help="default: cores // cores-per-job")
    p.add_argument("--timeout", type=float, default=None, help="processes: give up after")
    p.add_argument("--rank", type=int, default=0, help="instance: its index")
    p.add_argument("--of", type=int, default=1, help="instance: how many instances")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    k = args.cores_per_job
    workers = args.workers or max(1, len(os.sched_getaffinity(0)) // k)
    if args.mode == "pool":
        run_pool(args.spec, args.out, k, workers)
    elif args.mode in ("tune", "tune_fresh"):
        run_tune(args.spec, args.out, k, workers, reuse=args.mode == "tune")
    elif args.mode == "multi_instance":
        run_multi_instance(args.spec, args.out, k, workers)
    elif args.mode == "instance":
        run_instance(args.spec, args.out, args.rank, args.of, k)
    elif not run_processes(args.spec, args.out, args.timeout):
        print(json.dumps({"timeout": args.timeout}), flush=True)
        return 3
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.flush()
    code = main()
    sys.stdout.flush()
    sys.exit(code)
