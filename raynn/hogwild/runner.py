"""Run a HOGWILD spec: validate, start the server and the workers, evaluate, record, clean up.

``executor="ray"``: one :class:`~raynn.hogwild.server.ParameterServer` actor per shard on the
driver's node (restarted from its checkpoint if it dies), and on every node one pinned
:class:`~raynn.hogwild.worker.HogwildWorker` actor per core sharing that node's
:class:`~raynn.hogwild.shared_params.SharedParams` (:mod:`raynn.hogwild.ray_run`, one round of
workers in :mod:`raynn.hogwild.rounds`). The driver evaluates the server's weights on the
test split every ``training.eval_every_seconds`` (:mod:`raynn.hogwild.evaluator`).

``executor="serial"``: the baseline, plain SGD in this process with the same step code
(:func:`raynn.hogwild.loop.train`), evaluated on the same timer (:mod:`raynn.hogwild.serial`).

Run directory (``runs/<run-id>/``, tables written atomically, one part per attempt)::

    run.json                      spec, versions, nodes, server stats, status, wall seconds
    eval/part-<n>.parquet         EVAL_SCHEMA: global weights' test loss/accuracy over time
    hogwild/part-<n>.parquet      HOGWILD_SCHEMA: one row per worker
    utilization/<node>-<n>.parquet  per-core CPU % (raynn.runs.results.UTILIZATION_SCHEMA)
    checkpoints/server-<i>.ckpt   the server shards' latest weights + version
    report.md                     ``raynn report``

Shared memory is released on success, on error and on Ctrl-C: the driver unlinks every
node's segment in ``finally`` (:mod:`raynn.hogwild.segments`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from raynn.core.data import ArrayDataset
from raynn.errors import OutputError, RaynnError
from raynn.hogwild.checkpoint import read_checkpoint
from raynn.hogwild.evaluator import Evaluator
from raynn.hogwild.plan import PlannedWorker, plan_workers
from raynn.hogwild.prepare import Outcome, Prepared, prepare, validate
from raynn.hogwild.ray_run import SERVER_NAME, run_ray
from raynn.hogwild.report import summarize
from raynn.hogwild.serial import run_serial
from raynn.hogwild.tables import EVAL_SCHEMA, HOGWILD_SCHEMA, write_tables
from raynn.hogwild.view import HogwildView
from raynn.placement import session
from raynn.placement.nodes import Node, local_node, session_nodes
from raynn.runs.record import RunRecord, RunResult, check_writable
from raynn.runs.report import write_report
from raynn.runs.results import output_root, read_table
from raynn.runs.signals import name_run_dir
from raynn.spec.hogwild import HogwildSpec

__all__ = [
    "EVAL_SCHEMA",
    "HOGWILD_SCHEMA",
    "SERVER_NAME",
    "Prepared",
    "final_weights",
    "prepare",
    "run",
    "validate",
]


def run(
    spec: HogwildSpec | None = None,
    *,
    executor: str = "ray",
    output: str | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    address: str | None = None,
    num_cpus: int | None = None,
    threads: int | None = None,
    dataset: ArrayDataset | None = None,
) -> RunResult:
    """Train ``spec`` with HOGWILD (``executor="ray"``) or the serial baseline (``"serial"``).

    Args:
        spec: the HOGWILD spec; omitted when resuming.
        executor: ``"ray"`` (workers on every core of every node) or ``"serial"``.
        output: root folder for run directories (default: the spec's ``output.dir``).
        resume: an existing run directory: continue from its server checkpoint.
        progress: show the live progress view.
        address: Ray cluster address (None: embedded local Ray, or ``RAY_ADDRESS``).
        num_cpus: CPUs of the embedded local Ray.
        threads: torch threads of the serial baseline (default: every usable core).
        dataset: arrays to train on instead of loading ``spec.dataset`` (Python API).

    Returns:
        The run directory, its status (``completed`` / ``failed``) and the ``hogwild/`` rows of
        this attempt (one per worker, with a ``status`` column).
    """
    if executor not in ("ray", "serial"):
        raise RaynnError(f"unknown executor {executor!r}; valid: ray, serial")
    record = RunRecord.open(resume) if resume is not None else None
    if record is not None:
        spec = record.resume_spec(spec)  # a spec given beside resume must be the run's own
        if (record.attempts or [{}])[-1].get("status") == "completed":
            return _nothing_to_resume(record)
    if not isinstance(spec, HogwildSpec):
        raise RaynnError("hogwild run() needs a HogwildSpec or resume=RUN_DIR")
    root = None if record is not None else _writable_root(output or spec.output.dir)
    prepared = prepare(spec, dataset)
    embedded = _check_embedded(spec, executor, address, num_cpus)
    started = False
    try:
        started = executor == "ray" and session.connect(address, num_cpus)
        nodes, slots = _first_round(spec, executor, embedded, num_cpus)
        record = record if record is not None else RunRecord.create(root, spec)
        record.acquire()
        outcome = _attempt(record, prepared, executor, threads, progress, nodes, slots)
        write_report(record.run_dir, summarize(record.run_dir))
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the CLI names the run to resume
        name_run_dir(exc, record and record.run_dir)
        raise
    finally:
        session.shutdown_if_started(started)
        if record is not None:
            record.release()
    jobs = pa.Table.from_pylist(outcome.rows, schema=HOGWILD_SCHEMA).to_pandas()
    return RunResult(record.run_dir, record.attempts[-1]["status"], jobs)


def _check_embedded(
    spec: HogwildSpec, executor: str, address: str | None, num_cpus: int | None
) -> bool:
    """Whether the run starts an embedded Ray here; if so, whether this machine can take the
    spec is checked now, before Ray starts at all (SpecError)."""
    embedded = executor == "ray" and session.will_embed(address)
    if embedded:
        plan_workers(spec, [local_node("local", num_cpus)])
    return embedded


def _first_round(
    spec: HogwildSpec, executor: str, embedded: bool, num_cpus: int | None
) -> tuple[list[Node], list[PlannedWorker]]:
    """The nodes of a Ray run (once connected) and its first round's workers; none serially."""
    if executor != "ray":
        return [], []
    nodes = session_nodes(embedded, num_cpus)
    return nodes, plan_workers(spec, nodes)


def _writable_root(output: str) -> Path:
    """The root folder new run directories go in, refused before the data loads or Ray
    starts if it cannot be written."""
    root = output_root(output)
    check_writable(root)
    return root


def _nothing_to_resume(record: RunRecord) -> RunResult:
    """A resume of a completed run: one line, and nothing written (no attempt in run.json)."""
    print(
        f"raynn: {record.run_dir} is complete: its last attempt completed; nothing to "
        "resume, nothing changed",
        file=sys.stderr,
    )
    if not (record.run_dir / "report.md").is_file():  # what the CLI prints
        write_report(record.run_dir, summarize(record.run_dir))
    return RunResult(record.run_dir, "completed", read_table(record.run_dir, "hogwild"))


def _attempt(
    record: RunRecord,
    p: Prepared,
    executor: str,
    threads: int | None,
    progress: bool,
    nodes: list[Node],
    slots: list[PlannedWorker],
) -> Outcome:
    """One attempt in ``record``'s run directory: train, then write its tables and run.json
    (also when training was interrupted: what it did until then is kept, then the interrupt
    is raised)."""
    run_dir, n = record.run_dir, len(record.attempts)
    view = HogwildView(p.spec, len(p.data.y_train), progress)
    evaluator = Evaluator(p.spec, p.data, n, run_dir)
    outcome = Outcome([], [], {})
    with record.attempt(executor) as attempt:
        try:
            if executor == "serial":
                outcome = run_serial(p, run_dir, threads, view, evaluator)
            else:
                outcome = run_ray(p, run_dir, n, nodes, slots, view, evaluator)
            attempt.update(outcome.fields)
            if outcome.interrupted is not None:  # recorded: now the attempt ends as it must
                raise outcome.interrupted
            ok = "error" not in attempt and all(
                r["status"] in ("ok", "restarted") for r in outcome.rows
            )
            attempt["status"] = "completed" if ok else "failed"
        finally:
            view.finish()
            final = [e for e in evaluator.rows if e["final"]]
            if final:
                attempt["final_accuracy"] = final[-1]["accuracy"]
            try:
                write_tables(run_dir, n, outcome.rows, evaluator.rows, outcome.util)
            except OutputError:
                pass  # the original error (often the same full disk) is the one to report
    return outcome


def final_weights(run_dir: str | Path) -> np.ndarray:
    """The server's latest weights of a run (its shard checkpoints, concatenated)."""
    paths = sorted(
        Path(run_dir, "checkpoints").glob("server-*.ckpt"),
        key=lambda q: int(q.stem.split("-")[1]),
    )
    if not paths:
        raise RaynnError(f"{run_dir} has no server checkpoint; was it a hogwild run?")
    return np.concatenate([read_checkpoint(q)[0] for q in paths])
