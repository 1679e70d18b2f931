"""Run a K-fold spec end to end: validate, load data, plan jobs, execute, record, report.

Everything that can fail on bad input (spec, dataset, folds, cores, output directory) is
checked before any job starts and before a run directory is created.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from raynn.data import ArrayDataset, load_dataset
from raynn.errors import OutputError, RaynnError
from raynn.grid import Job, make_jobs
from raynn.results import SCHEMA_VERSION, RunLock, create_run_dir, read_table, write_json
from raynn.scheduler.cores import usable_cpus
from raynn.scheduler.executor import Executor, get_executor
from raynn.scheduler.monitor import Progress
from raynn.scheduler.probe import auto_group_sizes, calibrate
from raynn.spec import KFoldSpec, spec_from_dict


@dataclass
class Plan:
    """A validated spec with its data and jobs, ready to execute."""

    spec: KFoldSpec
    data: ArrayDataset
    jobs: list[Job]


@dataclass
class RunResult:
    """Where a run's results are, plus its job table."""

    run_dir: Path
    status: str
    jobs: Any  # pandas.DataFrame

    @property
    def ok(self) -> bool:
        return self.status == "completed"


def prepare(spec: KFoldSpec, data: ArrayDataset | None = None) -> Plan:
    """Load the data (unless given), make folds and the job list; raise on anything invalid."""
    data = (data or load_dataset(spec.dataset)).with_folds(spec.folds, spec.seed)
    jobs = make_jobs(spec, data.in_shape, data.num_classes, len(data.folds[0][0]))
    return Plan(spec, data, jobs)


def schedule(
    ex: Executor, spec: KFoldSpec, jobs: list[Job], data: ArrayDataset
) -> tuple[list[Job], int]:
    """Probe the models (parallel executors, ``scheduling.probe``), then let the executor
    connect and resolve ``cores_per_job`` (with ``auto``, per model: ``Job.cores``).
    Returns the jobs in run order and the workers' group size."""
    choose = None
    if ex.name != "serial" and spec.scheduling.probe and jobs:
        jobs, speeds = calibrate(jobs, data, len(usable_cpus()))
        choose = partial(auto_group_sizes, jobs, speeds)
    size = ex.prepare(len(jobs), spec.scheduling.cores_per_job, choose)
    if ex.cores_by_model:
        jobs = [replace(j, cores=ex.cores_by_model[j.model.label]) for j in jobs]
    return jobs, size


def _versions() -> dict[str, str]:
    import numpy
    import torch

    import raynn

    out = {
        "raynn": raynn.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }
    try:
        import ray

        out["ray"] = ray.__version__
    except ImportError:  # pragma: no cover - ray is a dependency
        pass
    return out


def _execute(
    ex: Executor,
    spec: KFoldSpec,
    jobs: list[Job],
    data: ArrayDataset,
    run_dir: Path,
    meta: dict[str, Any],
    cores_per_job: int,
    progress: bool,
) -> dict[str, Any]:
    """Execute ``jobs``, keeping this invocation's entry of ``run.json`` current."""
    attempt: dict[str, Any] = {
        "executor": ex.name,
        "jobs": len(jobs),
        "cores_per_job": cores_per_job,
        "start": time.time(),
        "status": "running",
    }
    meta["runs"].append(attempt)
    write_json(run_dir / "run.json", meta)
    view = Progress(spec.name, spec.training.epochs, enabled=progress)
    try:
        execution = ex.execute(jobs, data, str(run_dir), scheduling=spec.scheduling, progress=view)
        attempt.update(vars(execution))
        attempt["status"] = "completed"
    except KeyboardInterrupt:
        attempt["status"] = "interrupted"
        raise
    except BaseException as exc:
        attempt["status"] = "failed"
        attempt["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        view.close()
        attempt["end"] = time.time()
        attempt["wall_seconds"] = attempt["end"] - attempt["start"]
        try:
            write_json(run_dir / "run.json", meta)
        except OutputError:
            pass  # the original error (often the same full disk) is the one to report
    return attempt


def _check_writable(root: Path) -> None:
    probe = root
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise OutputError(
            f"output directory {root} is not writable; choose another with "
            "--output (or output.dir in the spec)"
        )


def run(
    spec: KFoldSpec | None = None,
    *,
    executor: str | Executor = "ray",
    output: str | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: bool = True,
    data: ArrayDataset | None = None,
    **executor_options: Any,
) -> RunResult:
    """Run every job of ``spec`` (or the missing jobs of run directory ``resume``).

    Args:
        spec: the K-fold spec; omitted when resuming.
        executor: ``"ray"`` (default), ``"serial"``, or an :class:`Executor` instance.
        output: root folder for run directories (default: the spec's ``output.dir``).
        resume: an existing run directory: run only its jobs that have no ok row.
        progress: show the live progress view.
        data: in-memory data to use instead of ``spec.dataset`` (such runs cannot resume).
        **executor_options: passed to the executor (``address``, ``threads``, ...).

    Returns:
        The run directory, its final status and its job table.
    """
    import json

    if resume is not None:
        run_dir = Path(resume)
        try:
            meta = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError) as exc:
            raise RaynnError(
                f"cannot resume {run_dir}: no readable run.json ({exc}); pass a "
                "run directory made by 'raynn run'"
            ) from None
        if meta.get("data") == "in-memory":
            raise RaynnError(
                f"cannot resume {run_dir}: it trained on in-memory data; run it again from Python"
            )
        spec = spec_from_dict(meta["spec"])
    elif spec is None:
        raise RaynnError("run() needs a spec or resume=RUN_DIR")
    plan = prepare(spec, data)
    jobs = plan.jobs
    lock = None
    if resume is not None:
        lock = RunLock(run_dir)
        lock.acquire()
        table = read_table(run_dir, "jobs")
        done = set(table.loc[table["status"] == "ok", "job_id"])
        jobs = [j for j in jobs if j.job_id not in done]
    ex = executor if isinstance(executor, Executor) else get_executor(executor, **executor_options)
    try:
        jobs, cores_per_job = schedule(ex, spec, jobs, plan.data)
        if resume is None:
            root = Path(output or spec.output.dir)
            _check_writable(root)
            run_dir = create_run_dir(root, spec.name)
            lock = RunLock(run_dir)
            lock.acquire()
            meta = {
                "schema_version": SCHEMA_VERSION,
                "spec": spec.to_dict(),
                "argv": sys.argv,
                "versions": _versions(),
                "driver": socket.gethostname(),
                "data": "in-memory" if data is not None else "spec",
                "runs": [],
            }
        attempt = _execute(ex, spec, jobs, plan.data, run_dir, meta, cores_per_job, progress)
    finally:
        ex.close()
        if lock is not None:
            lock.release()
    from raynn.report import write_report

    write_report(run_dir)
    return RunResult(run_dir, attempt["status"], read_table(run_dir, "jobs"))
