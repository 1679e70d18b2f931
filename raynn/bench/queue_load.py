"""``raynn bench scale --queue-workers``: how many jobs a second the queue actor hands out.

The real :class:`~raynn.kfold.queue.JobQueue` runs as a Ray actor, created as
:class:`~raynn.kfold.executors.ray_run.RayRun` creates it (``ray.remote(num_cpus=0)``, on the
driver's node, with the spec's ``max_attempts``, ``tail_widening`` and ``lease_timeout``),
over the spec's grid drawn with replacement (:func:`raynn.bench.scale.draw_jobs`). Worker
loops do per job what :class:`~raynn.kfold.workers.CoreGroupWorker` does, for jobs that do
nothing: register their core on their node, ``lease`` once, then ``finish`` (complete the
jobs and lease the next, one call) until ``Retire``; on ``Wait`` they sleep its seconds and
lease again. A lease grants up to ``prefetch`` jobs (a batch): raynn's workers ask for
:data:`~raynn.kfold.handover.PREFETCH_MAX` after jobs this short; ``prefetch`` 1 measures a
call per job. Nodes are fake: :data:`WORKERS_PER_NODE` workers a node name, each on its own
core id (the queue knows names and ids only). While they run, the driver polls the queue's
``stats`` every :data:`STATS_POLL_S` seconds, as a run's progress view does.

Not one process per worker: the loops run as threads (:class:`LoopRunner`), a few Ray actor
processes (``runners``) holding many threads each, so that 256 workers fit a small machine.
Each thread blocks in ``ray.get`` as a worker does, but the threads of a runner share its
GIL, and every process (queue, runners, driver) shares this machine's cores. Not measured:
the results collector's ``write_job`` per job (a real worker's ``finish`` waits on it:
:mod:`raynn.kfold.handover`), heartbeats and ``progress`` (a job that does nothing has no
steps and no epochs), fold racing.

Per worker count: ``jobs`` handed out, ``seconds`` from the first call to the last worker's
retirement, ``jobs_per_s``, and the latency of each queue call as its worker sees it
(``ray.get`` of the call: p50, p90, p99 in ms); their summary and its bar are
:mod:`raynn.bench.queue_load_summary`'s.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raynn.bench.queue_load_summary import (
    METRICS,
    STATS_POLL_S,
    WORKERS_PER_NODE,
    fake_slot,
    header_for,
    in_process_rate,
    notes_for,
    pickle_micros,
    summarize,
)
from raynn.kfold.grid import Job
from raynn.kfold.handover import PREFETCH_MAX, want
from raynn.kfold.messages import Batch, Grant, Outcome, Retire, Wait
from raynn.kfold.queue import JobQueue


@dataclasses.dataclass
class QueueLoad:
    """One measured run: its workers, the jobs they got, the rate and the call latencies."""

    workers: int
    prefetch: int  # the most jobs a lease grants (1: one job per call)
    runners: int  # Ray actor processes running the worker loops as threads
    nodes: int  # fake node names
    jobs: int
    seconds: float
    jobs_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    calls: int  # queue calls timed: each worker's first lease, its finishes, leases after a Wait
    waits: int  # Wait answers (cores busy)
    stats_polls: int


@dataclasses.dataclass
class LoopResult:
    """One worker loop: the jobs it was granted, each call's seconds, when it began and
    retired (``time.time()``), the waits, and the error that ended it, if any."""

    worker: str
    handed: list[str] = dataclasses.field(default_factory=list)
    latencies: list[float] = dataclasses.field(default_factory=list)
    began: float = 0.0
    ended: float = 0.0
    waits: int = 0
    error: str | None = None


def _timed(result: LoopResult, method: Any, *args: Any) -> Any:
    """``ray.get(method.remote(*args))``, its seconds appended to ``result.latencies``."""
    import ray

    began = time.perf_counter()
    answer = ray.get(method.remote(*args))
    result.latencies.append(time.perf_counter() - began)
    return answer


def worker_loop(
    queue: Any, worker: str, go: threading.Event | None = None, prefetch: int = PREFETCH_MAX
) -> LoopResult:
    """A worker's loop for jobs that do nothing: ``lease``, then ``finish`` each granted job
    or batch (its next answer with it) until ``Retire``; on ``Wait``, sleep and lease again.

    Args:
        queue: the queue actor's handle; ``worker`` must have registered its cores.
        worker: the worker's id.
        go: waited for before the first call (all loops start together).
        prefetch: the most jobs it asks for in one lease (a worker's
            :func:`~raynn.kfold.handover.want` after jobs that take no time; 1: no batches).

    Returns:
        What the loop saw; an exception ends it with ``error`` set.
    """
    result = LoopResult(worker)
    if go is not None:
        go.wait()
    result.began = time.time()
    try:
        answer = _timed(result, queue.lease, worker)
        while not isinstance(answer, Retire):
            if isinstance(answer, Wait):
                result.waits += 1
                time.sleep(answer.seconds)
                answer = _timed(result, queue.lease, worker)
                continue
            if not isinstance(answer, Grant | Batch):
                raise TypeError(f"the queue answered a lease with {answer!r}")
            grants = answer.grants if isinstance(answer, Batch) else (answer,)
            result.handed.extend(g.job.job_id for g in grants)
            outcomes = [Outcome(g.job.job_id, metrics=METRICS, epochs=1) for g in grants]
            _, answer = _timed(result, queue.finish, worker, outcomes, min(prefetch, want(0.0)))
    except Exception as exc:  # reported by the driver, with the worker's id
        result.error = f"{type(exc).__name__}: {exc}"
    result.ended = time.time()
    return result


class LoopRunner:
    """Many worker loops as threads of one process (a ``ray.remote(num_cpus=0)`` actor).

    :meth:`start` registers its workers with the queue and starts their threads, which wait
    for :meth:`go`; :meth:`results` waits for every loop to retire.
    """

    def __init__(self) -> None:
        self._go = threading.Event()
        self._threads: list[threading.Thread] = []
        self._results: list[LoopResult] = []

    def start(
        self, queue: Any, slots: Sequence[tuple[str, str, int]], prefetch: int = PREFETCH_MAX
    ) -> int:
        """Register each ``(worker, node, core)`` with ``queue`` and start its loop's thread
        (waiting for :meth:`go`, leasing up to ``prefetch`` jobs); returns how many started."""
        import ray

        ray.get([queue.register.remote(w, node, [core]) for w, node, core in slots])
        self._go, self._threads, self._results = threading.Event(), [], []
        for worker, _, _ in slots:
            args = (queue, worker, prefetch)
            thread = threading.Thread(target=self._loop, args=args, daemon=True)
            thread.start()
            self._threads.append(thread)
        return len(slots)

    def _loop(self, queue: Any, worker: str, prefetch: int) -> None:
        self._results.append(worker_loop(queue, worker, self._go, prefetch))  # atomic append

    def go(self) -> None:
        """Let every started loop make its first call."""
        self._go.set()

    def results(self) -> list[LoopResult]:
        """Wait for every loop to retire; what each saw."""
        for thread in self._threads:
            thread.join()
        return list(self._results)


def queue_actor(jobs: Sequence[Job], scheduling: Any) -> Any:
    """The queue as :class:`~raynn.kfold.executors.ray_run.RayRun` starts it: a
    ``num_cpus=0`` actor on the driver's node (no fold racing)."""
    import ray

    from raynn.placement.nodes import on_node

    driver, s = ray.get_runtime_context().get_node_id(), scheduling
    actor = ray.remote(num_cpus=0)(JobQueue).options(**on_node(driver))
    return actor.remote(list(jobs), s.max_attempts, s.tail_widening, s.lease_timeout, None)


def _drive(queue: Any, runners: Sequence[Any]) -> tuple[list[LoopResult], int]:
    """Let the runners' loops go; poll the queue's stats until every loop retired."""
    import ray

    ray.get([r.go.remote() for r in runners])
    refs = [r.results.remote() for r in runners]
    polls = 0
    while len(ray.wait(refs, num_returns=len(refs), timeout=STATS_POLL_S)[0]) < len(refs):
        ray.get(queue.stats.remote())
        polls += 1
    return [loop for part in ray.get(refs) for loop in part], polls


def measure(
    jobs: Sequence[Job],
    scheduling: Any,
    runners: Sequence[Any],
    workers: int,
    per_node: int = WORKERS_PER_NODE,
    prefetch: int = PREFETCH_MAX,
) -> tuple[QueueLoad, list[str]]:
    """One run: a fresh queue actor over ``jobs``, ``workers`` loops spread over ``runners``
    (:class:`LoopRunner` actors; at most ``workers`` of them are used).

    Returns:
        The run's measures, and every job id handed out, in no particular order.

    Raises:
        RuntimeError: a worker loop failed.
    """
    import ray

    queue = queue_actor(jobs, scheduling)
    try:
        used = list(runners[: max(1, min(len(runners), workers))])
        slots = [(f"w{i}", *fake_slot(i, per_node)) for i in range(workers)]
        parts = [slots[k :: len(used)] for k in range(len(used))]
        ray.get(
            [r.start.remote(queue, part, prefetch) for r, part in zip(used, parts, strict=True)]
        )
        loops, polls = _drive(queue, used)
    finally:
        ray.kill(queue)
    failed = [f"{loop.worker}: {loop.error}" for loop in loops if loop.error]
    if failed:
        raise RuntimeError(f"{len(failed)} worker loop(s) failed, first {failed[0]}")
    handed = [job_id for loop in loops for job_id in loop.handed]
    seconds = max(loop.ended for loop in loops) - min(loop.began for loop in loops)
    ms = np.percentile([s for loop in loops for s in loop.latencies], [50, 90, 99]) * 1e3
    calls = sum(len(loop.latencies) for loop in loops)
    waits = sum(loop.waits for loop in loops)
    nodes = len({fake_slot(i, per_node)[0] for i in range(workers)})
    row = QueueLoad(
        workers, prefetch, len(used), nodes, len(handed), seconds, len(handed) / seconds,
        float(ms[0]), float(ms[1]), float(ms[2]), calls, waits, polls,
    )  # fmt: skip
    return row, handed


def check_handed(jobs: Sequence[Job], handed: Sequence[str]) -> None:
    """Raise :class:`RuntimeError` unless every job was handed out exactly once."""
    counts = Counter(handed)
    twice = sorted(j for j, n in counts.items() if n > 1)
    missing = sorted({j.job_id for j in jobs} - set(counts))
    if twice or missing or len(counts) != len(jobs):
        raise RuntimeError(
            f"the queue handed out {len(twice)} job(s) more than once (first {twice[:1]}) and "
            f"{len(missing)} never (first {missing[:1]})"
        )


def bench_queue_load(
    jobs: Sequence[Job],
    scheduling: Any,
    workers: Sequence[int],
    repeats: int = 1,
    runners: int = 4,
    prefetch: Sequence[int] = (PREFETCH_MAX,),
) -> pd.DataFrame:
    """Measure each worker count with each ``prefetch`` (the most jobs a lease grants)
    ``repeats`` times, interleaved (every pair once, then again); Ray must be up. One row
    per run (:class:`QueueLoad` and ``repeat``); every run is checked to hand out every job
    exactly once."""
    import ray

    actor = ray.remote(num_cpus=0)(LoopRunner)
    pool = [actor.remote() for _ in range(max(1, min(runners, max(workers))))]
    rows: list[dict[str, Any]] = []
    try:
        for repeat in range(repeats):
            for n, most in itertools.product(workers, prefetch):
                row, handed = measure(jobs, scheduling, pool, n, prefetch=most)
                check_handed(jobs, handed)
                rows.append({"repeat": repeat, **dataclasses.asdict(row)})
    finally:
        for runner in pool:
            ray.kill(runner)
    return pd.DataFrame(rows)


def run_bench_queue_load(
    spec: Any,
    workers: Sequence[int],
    jobs: int,
    repeats: int,
    runners: int,
    output: str,
    prefetch: Sequence[int] = (PREFETCH_MAX,),
) -> Path:
    """Start an embedded local Ray on this machine's cores (never a cluster; or use the Ray
    this process has up), measure each worker count with each ``prefetch``, write the
    summary; the bench folder."""
    from raynn.bench.common import bench_folder, machine, machine_line, write_summary
    from raynn.bench.scale import draw_jobs
    from raynn.kfold.runner import prepare
    from raynn.placement import session

    grid = [dataclasses.replace(j, cores=0) for j in prepare(spec).jobs]  # the worker's core
    drawn = draw_jobs(grid, jobs)
    started = session.connect("local")
    try:
        runs = bench_queue_load(drawn, spec.scheduling, workers, repeats, runners, prefetch)
    finally:
        session.shutdown_if_started(started)
    out = bench_folder(output, f"queue_{spec.name}")
    runs.to_csv(out / "runs.csv", index=False)
    table = summarize(runs)
    header = header_for(spec, table, len(grid), jobs, machine_line(machine()))
    notes = notes_for(table, in_process_rate(drawn), pickle_micros(drawn[0]))
    formats = {c: "{:.0f}" for c in ("jobs_per_s", "jobs_per_s_min", "jobs_per_s_max")}
    formats |= {c: "{:.2f}" for c in ("seconds", "p50_ms", "p90_ms", "p99_ms")}
    write_summary(table, out, "queue_load", header, formats, notes)
    return out
