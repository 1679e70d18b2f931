"""Run a K-fold spec end to end: validate, load data, plan jobs, execute, record, report.

Everything that can fail on bad input (spec, dataset, folds, cores, output directory) is
checked before any job starts and before a run directory is created.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from raynn.core.data import ArrayDataset, load_dataset
from raynn.errors import RaynnError
from raynn.kfold.executors.factory import Executor, get_executor
from raynn.kfold.grid import Job, make_jobs
from raynn.kfold.packing import run_order
from raynn.kfold.probe import ProbeCache, ProbeReport, auto_group_sizes, calibrate
from raynn.kfold.racing import Race, race_summary, start_race
from raynn.kfold.report import summarize
from raynn.kfold.rows import FINAL
from raynn.kfold.tables import JOBS_SCHEMA  # noqa: F401 - registers the tables' schemas
from raynn.placement.cores import check_cores_per_job, usable_cpus
from raynn.placement.progress import Progress
from raynn.runs.record import RunRecord, RunResult, check_writable
from raynn.runs.report import write_report
from raynn.runs.results import output_root, read_table, set_aside
from raynn.runs.signals import name_run_dir
from raynn.spec import KFoldSpec
from raynn.spec.search import Configuration, configurations, space_record


@dataclass
class Plan:
    """A validated spec with its data and jobs, ready to execute."""

    spec: KFoldSpec
    data: ArrayDataset
    jobs: list[Job]
    configs: list[Configuration]


def load_data(spec: KFoldSpec, data: ArrayDataset | None = None) -> ArrayDataset:
    """The spec's dataset (or ``data``) with its folds; raise on anything invalid."""
    return (data or load_dataset(spec.dataset)).with_folds(spec.folds, spec.seed)


def plan_jobs(spec: KFoldSpec, data: ArrayDataset) -> Plan:
    """The job list of ``spec`` on ``data`` (folds made), longest expected first."""
    from raynn.core.losses import build_loss

    build_loss(spec.training.loss, data.num_classes)  # a bad loss fails here, not in a job
    configs = configurations(spec)
    jobs = make_jobs(spec, data.in_shape, data.num_classes, len(data.folds[0][0]), configs)
    return Plan(spec, data, jobs, configs)


def prepare(spec: KFoldSpec, data: ArrayDataset | None = None) -> Plan:
    """Load the data (unless given), make folds and the job list; raise on anything invalid."""
    return plan_jobs(spec, load_data(spec, data))


def space_line(spec: KFoldSpec, configs: int) -> str:
    """``21 configurations x 5 folds = 105 jobs`` (and the models x schedulers they span)."""
    jobs = configs * spec.folds

    def some(n: int, what: str) -> str:
        return f"{n} {what}" + ("s" if n != 1 else "")

    parts = f"{some(len(spec.models), 'model')} x {some(len(spec.schedulers), 'scheduler')}"
    if spec.search.space:
        parts += f", {some(len(spec.search.space), 'searched key')}"
    return f"{configs} configurations x {spec.folds} folds = {jobs} jobs ({parts})"


def validate(spec: KFoldSpec) -> str:
    """Check the spec, its dataset and its cores without running; a one-line description."""
    plan = prepare(spec)
    if spec.scheduling.cores_per_job != "auto":
        check_cores_per_job(int(spec.scheduling.cores_per_job), [len(usable_cpus())])
    d = plan.data
    test = 0 if d.y_test is None else len(d.y_test)
    configs = len({j.config for j in plan.jobs})
    return (
        f"{space_line(spec, configs)} on {d.name} {d.in_shape}, {len(d.y_train)} train / "
        f"{test} test samples"
    )


def schedule(
    ex: Executor, spec: KFoldSpec, jobs: list[Job], data: ArrayDataset
) -> tuple[list[Job], int, ProbeReport]:
    """Probe the models (parallel executors, ``scheduling.probe``; read from the probe cache
    where it holds them), then let the executor connect and resolve ``cores_per_job`` (with
    ``auto``, per model: ``Job.cores``). Returns the jobs in run order (longest first, or
    planned: :func:`raynn.kfold.packing.run_order`), the workers' group size and what the
    probe did."""
    choose, speeds = None, None
    report = ProbeReport()
    if ex.name != "serial" and spec.scheduling.probe and jobs:
        jobs, speeds = calibrate(jobs, data, len(usable_cpus()), ProbeCache(), report)
        choose = partial(auto_group_sizes, jobs, speeds)
    size = ex.size_groups(len(jobs), spec.scheduling.cores_per_job, choose)
    if ex.cores_by_model:
        jobs = [replace(j, cores=ex.cores_by_model[j.model.label]) for j in jobs]
    if speeds is not None and spec.scheduling.racing is None:  # racing orders by fold
        jobs = run_order(jobs, speeds, size, ex.slots)
    return jobs, size, report


def process_start() -> float:
    """When this process started, as ``time.time()`` (the start of the command).

    From ``/proc/self/stat`` against the boot-time clock (10 ms steps); psutil's
    ``create_time`` can be a second off, as it counts from a boot time in whole seconds.
    """
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()


def _execute(
    ex: Executor,
    spec: KFoldSpec,
    jobs: list[Job],
    data: ArrayDataset,
    record: RunRecord,
    cores_per_job: int,
    progress: bool,
    stages: dict[str, float],
    probe: ProbeReport,
    race: Race | None = None,
) -> dict[str, Any]:
    """Execute ``jobs``, keeping this invocation's entry of ``run.json`` current.

    ``stages``: when this run began (``entered``) and each step before the execution ended
    (``time.time()``), recorded as seconds since the process started, with the probe's
    report; the attempt starts at ``entered``.
    """
    t0 = stages.get("process_start", time.time())
    with record.attempt(
        ex.name,
        start=stages["entered"],  # the wall time counts the data, planning and probe too
        jobs=len(jobs),
        cores_per_job=cores_per_job,
        stages={k: round(v - t0, 3) for k, v in stages.items() if k != "process_start"},
        probe=dataclasses.asdict(probe),
    ) as attempt:
        view = Progress(spec.name, spec.training.epochs, enabled=progress)
        try:
            options = {"race": race} if race is not None else {}  # others need not know it
            execution = ex.execute(
                jobs, data, str(record.run_dir), scheduling=spec.scheduling, progress=view,
                **options,
            )  # fmt: skip
            attempt.update(vars(execution))
            attempt["status"] = "completed"
        finally:
            view.close()
    return attempt


def _check_rows(record: RunRecord, jobs: list[Job], attempt: dict) -> Any:
    """The run's job table; a run whose table lacks a row for any of its jobs is
    ``incomplete``, never ``completed`` (say, an output path that resolved somewhere else)."""
    run_dir = record.run_dir
    table = read_table(run_dir, "jobs")
    missing = sorted({j.job_id for j in jobs} - set(table["job_id"]))
    if attempt["status"] == "completed" and missing:
        attempt["status"] = "incomplete"
        attempt["error"] = (
            f"{len(missing)} of {len(jobs)} jobs have no row in {run_dir / 'jobs'} "
            f"(first: {missing[0]}); run 'raynn run --resume {run_dir}' to train them"
        )
        record.save()
    return table


def run(
    spec: KFoldSpec | None = None,
    *,
    executor: str | Executor = "auto",
    output: str | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: bool = True,
    data: ArrayDataset | None = None,
    **executor_options: Any,
) -> RunResult:
    """Run every job of ``spec`` (or the missing jobs of run directory ``resume``).

    Args:
        spec: the K-fold spec; omitted when resuming.
        executor: ``"auto"`` (default: ``"ray"`` given a cluster ``address`` or
            ``RAY_ADDRESS``, else ``"local"``), ``"local"``, ``"ray"``, ``"serial"``, or an
            :class:`Executor` instance.
        output: root folder for run directories (default: the spec's ``output.dir``).
        resume: an existing run directory: run only its jobs that have no ok row.
        progress: show the live progress view.
        data: in-memory data to use instead of ``spec.dataset`` (such runs cannot resume).
        **executor_options: passed to the executor (``address``, ``threads``, ...).

    Returns:
        The run directory, its final status and its job table.
    """
    stages = {"process_start": process_start(), "entered": time.time()}
    record, spec = _open(spec, resume)
    if resume is None:
        root = output_root(output or spec.output.dir)
        check_writable(root)  # before the data loads or any executor starts
    ex = _executor(executor, spec, executor_options)
    try:
        plan = _load_and_plan(ex, spec, data, stages)
        jobs, history = plan.jobs, None
        if record is not None:
            record.acquire()
            jobs, history = _unfinished(record, jobs)
            if _complete(spec, record, jobs):
                return _nothing_to_resume(record, history, spec)
        jobs, cores_per_job, probe = schedule(ex, spec, jobs, plan.data)
        stages["scheduled"] = time.time()
        if record is None:
            record = _new_record(root, spec, plan, in_memory=data is not None)
            record.acquire()
        race = start_race(spec.scheduling.racing, history, [len(v) for _, v in plan.data.folds])
        attempt = _execute(
            ex, spec, jobs, plan.data, record, cores_per_job, progress, stages, probe, race
        )
        table = _finish(spec, plan, record, jobs, attempt, race)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the CLI names the run to resume
        name_run_dir(exc, record and record.run_dir)
        raise
    finally:
        ex.close()
        if record is not None:
            record.release()
    return RunResult(record.run_dir, attempt["status"], table, spec)


def _open(
    spec: KFoldSpec | None, resume: str | os.PathLike[str] | None
) -> tuple[RunRecord | None, KFoldSpec]:
    """The run record of ``resume`` (None without one) and the spec to run (with ``resume``,
    the run's: a ``spec`` given too must be the run's own)."""
    if resume is None:
        if spec is None:
            raise RaynnError("run() needs a spec or resume=RUN_DIR")
        return None, spec
    record = RunRecord.open(resume)
    if record.meta.get("data") == "in-memory":
        raise RaynnError(
            f"cannot resume {record.run_dir}: it trained on in-memory data; run it again "
            "from Python"
        )
    return record, record.resume_spec(spec)


def _executor(executor: str | Executor, spec: KFoldSpec, options: dict[str, Any]) -> Executor:
    """``executor`` itself, or the executor of that name with ``options`` (and, but for
    ``serial``, the spec's ``scheduling.smt`` unless given)."""
    if isinstance(executor, Executor):
        return executor
    if executor != "serial":
        options.setdefault("smt", spec.scheduling.smt)
    return get_executor(executor, **options)


def _load_and_plan(
    ex: Executor, spec: KFoldSpec, data: ArrayDataset | None, stages: dict[str, float]
) -> Plan:
    """Load the data (unless given) and hand it to the executor, plan the jobs; when each
    ended goes into ``stages``."""
    dataset = load_data(spec, data)
    ex.stage(dataset)  # the local executor's zygote takes the data now
    stages["data_loaded"] = time.time()
    plan = plan_jobs(spec, dataset)
    stages["jobs_planned"] = time.time()
    return plan


def _new_record(root: Path, spec: KFoldSpec, plan: Plan, in_memory: bool) -> RunRecord:
    """A new run directory under ``root`` and its record (not yet locked)."""
    source = "in-memory" if in_memory else "spec"
    return RunRecord.create(root, spec, data=source, search=space_record(spec, plan.configs))


def _finish(
    spec: KFoldSpec,
    plan: Plan,
    record: RunRecord,
    jobs: list[Job],
    attempt: dict[str, Any],
    race: Race | None,
) -> Any:
    """After the jobs: check every job has its row, record the race, keep the models
    (:func:`raynn.kfold.saved.keep_models`), write ``report.md``; the job table."""
    from raynn.kfold.saved import keep_models

    table = _check_rows(record, jobs, attempt)
    if race is not None:
        attempt["racing"] = race_summary(table)
        record.save()
    keep_models(spec, plan, record, table, attempt)
    write_report(record.run_dir, summarize(record.run_dir))
    return table


def _unfinished(record: RunRecord, jobs: list[Job]) -> tuple[list[Job], Any]:
    """The jobs of a resumed run without a final row (ok or raced out), and its job table;
    damaged table files are set aside (their jobs run again)."""
    run_dir = record.run_dir
    damaged: list[Path] = []
    table = read_table(run_dir, "jobs", damaged)
    epochs = read_table(run_dir, "epochs", damaged)
    for moved in set_aside(run_dir, damaged):
        print(f"raynn: set aside damaged {moved}; its jobs run again", file=sys.stderr)
    done = set(table.loc[table["status"].isin(FINAL), "job_id"])  # raced out: final
    trained = table.loc[(table["status"] == "ok") & (table["epochs"] > 0), "job_id"]
    done -= set(trained) - set(epochs["job_id"])  # an ok job whose epoch rows are lost
    return [j for j in jobs if j.job_id not in done], table


def _complete(spec: KFoldSpec, record: RunRecord, unfinished: list[Job]) -> bool:
    """Whether a resumed run has nothing left to do: every job has its final row, its last
    attempt completed, and what ``output.keep_models`` and ``output.refit`` do after the
    jobs is done."""
    meta = record.meta
    if unfinished or (record.attempts or [{}])[-1].get("status") != "completed":
        return False
    if spec.output.keep_models != "none" or spec.output.refit:
        if "models" not in meta or meta["models"].get("pending"):
            return False
    return not spec.output.refit or "refit" in meta


def _nothing_to_resume(record: RunRecord, table: Any, spec: KFoldSpec) -> RunResult:
    """A resume of a complete run: one line, and nothing written (no attempt in run.json)."""
    print(
        f"raynn: {record.run_dir} is complete: every job has its final row; nothing to "
        "resume, nothing changed",
        file=sys.stderr,
    )
    if not (record.run_dir / "report.md").is_file():  # what the CLI prints
        write_report(record.run_dir, summarize(record.run_dir))
    return RunResult(record.run_dir, "completed", table, spec)
