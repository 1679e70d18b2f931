"""The tools people would use instead of raynn, running the very same jobs.

* ``tune``: Ray Tune, one trial per job with ``{"cpu": cores_per_job}`` (a fresh worker per
  trial, no pinning; torch threads capped to the trial's CPUs).
* ``processes``: the original project's way: one ``torch.multiprocessing`` process per job,
  all started at once, torch's default thread count (no caps). The processes are forked
  from a fresh fork server (torch imported, no thread pool started yet): forking this
  harness process itself, whose OpenMP pool earlier modes started, can deadlock.

Both write their job rows through :class:`~raynn.results.ResultsCollector`, like raynn does.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from raynn.data import ArrayDataset
from raynn.grid import Job
from raynn.results import ResultsCollector
from raynn.training import JobResult, train_job


def _train_and_write(
    job: Job, data: ArrayDataset, run_dir: str, threads: int | None, worker: str
) -> None:
    import socket

    try:
        result = train_job(job, data, threads=threads)
    except Exception as exc:  # recorded like raynn records it
        result = JobResult.failed(job, f"{type(exc).__name__}: {exc}")
    result.node, result.worker = socket.gethostname(), worker
    ResultsCollector(run_dir).write_job(result)


def run_tune(
    jobs: list[Job], data: ArrayDataset, run_dir: Path, cores_per_job: int, num_cpus: int
) -> None:
    """Run ``jobs`` as Ray Tune trials (starts and stops its own local Ray).

    Tune installs its own Ctrl-C handler and leaves it behind; the caller's is put back, so
    Ctrl-C still interrupts this process afterwards.
    """
    import os
    import signal

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no progress tables on stdout
    import ray
    from ray import tune

    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    try:
        by_id = {j.job_id: j for j in jobs}

        def trainable(config: dict, data: ArrayDataset) -> dict:
            job = by_id[config["job_id"]]
            _train_and_write(job, data, str(run_dir), cores_per_job, "tune")
            return {"done": 1}

        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, data=data), {"cpu": cores_per_job}),
            param_space={"job_id": tune.grid_search(list(by_id))},
            tune_config=tune.TuneConfig(max_concurrent_trials=num_cpus // cores_per_job),
            run_config=tune.RunConfig(
                storage_path=tempfile.mkdtemp(prefix="raynn-tune-"), verbose=0
            ),
        )
        sigint = signal.getsignal(signal.SIGINT)
        try:
            tuner.fit()
        finally:
            signal.signal(signal.SIGINT, sigint)
    finally:
        ray.shutdown()


def run_processes(
    jobs: list[Job], data: ArrayDataset, run_dir: Path, timeout: float | None = None
) -> bool:
    """One process per job, all at once, no thread caps. False if ``timeout`` hit."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["raynn.bench.peers", "raynn.training"])
    procs = [
        ctx.Process(target=_train_and_write, args=(j, data, str(run_dir), None, f"p{i}"))
        for i, j in enumerate(jobs)
    ]
    for p in procs:
        p.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    finished = True
    for p in procs:
        p.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            finished = False
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return finished
