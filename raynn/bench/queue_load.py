"""``raynn bench scale --queue-workers``: how many jobs a second the queue actor hands out.

The real :class:`~raynn.kfold.queue.JobQueue` runs as a Ray actor, created as
:class:`~raynn.kfold.executors.ray_run.RayRun` creates it (``ray.remote(num_cpus=0)``, on the
driver's node, with the spec's ``max_attempts``, ``tail_widening`` and ``lease_timeout``),
over the spec's grid drawn with replacement (:func:`raynn.bench.scale.draw_jobs`). Worker
loops do per job what :class:`~raynn.kfold.workers.CoreGroupWorker` does, for jobs that do
nothing: register their core on their node, ``lease`` once, then ``finish`` (complete the
job and lease the next, one call) until ``Retire``; on ``Wait`` they sleep its seconds and
lease again. Nodes are fake: :data:`WORKERS_PER_NODE` workers a node name, each on its own
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
(``ray.get`` of the call: p50, p90, p99 in ms). The bar is :data:`BAR_JOBS_PER_S`.
"""

from __future__ import annotations

import dataclasses
import pickle
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raynn.kfold.grid import Job
from raynn.kfold.messages import Grant, Retire, Wait
from raynn.kfold.queue import JobQueue

BAR_JOBS_PER_S = 2000.0  # issue 23: the queue sustains at least this many jobs a second
WORKERS_PER_NODE = 8  # worker loops per fake node name
STATS_POLL_S = 0.5  # the driver polls the queue's stats this often, as RayRun._drive does
METRICS = {"val_accuracy": 0.5, "val_loss": 1.0}  # what a worker reports with an ok job
SUMMARY_COLUMNS = [
    "workers", "runners", "nodes", "jobs", "repeats", "seconds", "jobs_per_s",
    "jobs_per_s_min", "jobs_per_s_max", "p50_ms", "p90_ms", "p99_ms", "waits", "bar_met",
]  # fmt: skip


@dataclasses.dataclass
class QueueLoad:
    """One measured run: its workers, the jobs they got, the rate and the call latencies."""

    workers: int
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


def fake_slot(index: int, per_node: int = WORKERS_PER_NODE) -> tuple[str, int]:
    """Worker ``index``'s fake node name and core id: ``per_node`` workers a node."""
    return f"fake{index // per_node}", index % per_node


def _timed(result: LoopResult, method: Any, *args: Any) -> Any:
    """``ray.get(method.remote(*args))``, its seconds appended to ``result.latencies``."""
    import ray

    began = time.perf_counter()
    answer = ray.get(method.remote(*args))
    result.latencies.append(time.perf_counter() - began)
    return answer


def worker_loop(queue: Any, worker: str, go: threading.Event | None = None) -> LoopResult:
    """A worker's loop for jobs that do nothing: ``lease``, then ``finish`` each granted job
    (its next answer with it) until ``Retire``; on ``Wait``, sleep and lease again.

    Args:
        queue: the queue actor's handle; ``worker`` must have registered its cores.
        worker: the worker's id.
        go: waited for before the first call (all loops start together).

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
            if not isinstance(answer, Grant):
                raise TypeError(f"the queue answered a lease with {answer!r}")
            job_id = answer.job.job_id
            result.handed.append(job_id)
            _, answer = _timed(result, queue.finish, worker, job_id, True, None, METRICS, False)
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

    def start(self, queue: Any, slots: Sequence[tuple[str, str, int]]) -> int:
        """Register each ``(worker, node, core)`` with ``queue`` and start its loop's thread
        (waiting for :meth:`go`); returns how many started."""
        import ray

        ray.get([queue.register.remote(w, node, [core]) for w, node, core in slots])
        self._go, self._threads, self._results = threading.Event(), [], []
        for worker, _, _ in slots:
            thread = threading.Thread(target=self._loop, args=(queue, worker), daemon=True)
            thread.start()
            self._threads.append(thread)
        return len(slots)

    def _loop(self, queue: Any, worker: str) -> None:
        self._results.append(worker_loop(queue, worker, self._go))  # list.append: atomic

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
        ray.get([r.start.remote(queue, slots[k :: len(used)]) for k, r in enumerate(used)])
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
        workers, len(used), nodes, len(handed), seconds, len(handed) / seconds,
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
) -> pd.DataFrame:
    """Measure each worker count ``repeats`` times, interleaved (every count once, then
    again); Ray must be up. One row per run (:class:`QueueLoad` and ``repeat``); every run
    is checked to hand out every job exactly once."""
    import ray

    actor = ray.remote(num_cpus=0)(LoopRunner)
    pool = [actor.remote() for _ in range(max(1, min(runners, max(workers))))]
    rows: list[dict[str, Any]] = []
    try:
        for repeat in range(repeats):
            for n in workers:
                row, handed = measure(jobs, scheduling, pool, n)
                check_handed(jobs, handed)
                rows.append({"repeat": repeat, **dataclasses.asdict(row)})
    finally:
        for runner in pool:
            ray.kill(runner)
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per worker count: medians over the repeats, the rate's spread (min and max),
    and whether the median rate meets the bar."""
    by = runs.groupby("workers", sort=False)
    table = by[["runners", "nodes", "jobs"]].max()
    table["repeats"] = by.size()
    medians = ["seconds", "jobs_per_s", "p50_ms", "p90_ms", "p99_ms"]
    table[medians] = by[medians].median()
    rates = by["jobs_per_s"]
    table["jobs_per_s_min"], table["jobs_per_s_max"] = rates.min(), rates.max()
    table["waits"] = by["waits"].sum()
    table["bar_met"] = table["jobs_per_s"] >= BAR_JOBS_PER_S
    return table.reset_index()[SUMMARY_COLUMNS]


def in_process_rate(jobs: Sequence[Job], workers: int = 8) -> float:
    """Jobs a second that :class:`JobQueue` serves called directly (no Ray, no pickling):
    ``workers`` registered workers taking turns at ``lease`` / ``finish``."""
    queue = JobQueue(jobs)
    active = [f"w{i}" for i in range(workers)]
    for i, worker in enumerate(active):
        node, core = fake_slot(i)
        queue.register(worker, node, [core])
    held: dict[str, str] = {}
    began = time.perf_counter()
    while active:
        for worker in list(active):
            if worker in held:
                _, answer = queue.finish(worker, held.pop(worker), True, None, METRICS, False)
            else:
                answer = queue.lease(worker)
            if isinstance(answer, Grant):
                held[worker] = answer.job.job_id
            elif isinstance(answer, Retire):
                active.remove(worker)
    return len(jobs) / (time.perf_counter() - began)


def pickle_micros(job: Job, rounds: int = 2000) -> float:
    """Microseconds to pickle and unpickle one ``finish`` answer (a Grant of ``job``)."""
    answer = ([], Grant(job, 1, 0.0, (0,)))
    began = time.perf_counter()
    for _ in range(rounds):
        pickle.loads(pickle.dumps(answer, protocol=5))
    return (time.perf_counter() - began) / rounds * 1e6


def run_bench_queue_load(
    spec: Any,
    workers: Sequence[int],
    jobs: int,
    repeats: int,
    runners: int,
    output: str,
) -> Path:
    """Start an embedded local Ray on this machine's cores (never a cluster; or use the Ray
    this process has up), measure each worker count, write the summary; the bench folder."""
    from raynn.bench.common import bench_folder, machine, machine_line, write_summary
    from raynn.bench.scale import draw_jobs
    from raynn.kfold.runner import prepare
    from raynn.placement import session

    grid = [dataclasses.replace(j, cores=0) for j in prepare(spec).jobs]  # the worker's core
    drawn = draw_jobs(grid, jobs)
    started = session.connect("local")
    try:
        runs = bench_queue_load(drawn, spec.scheduling, workers, repeats, runners)
    finally:
        session.shutdown_if_started(started)
    out = bench_folder(output, f"queue_{spec.name}")
    runs.to_csv(out / "runs.csv", index=False)
    table = summarize(runs)
    header = _header(spec, table, len(grid), jobs, machine_line(machine()))
    notes = _notes(table, in_process_rate(drawn), pickle_micros(drawn[0]))
    formats = {c: "{:.0f}" for c in ("jobs_per_s", "jobs_per_s_min", "jobs_per_s_max")}
    formats |= {c: "{:.2f}" for c in ("seconds", "p50_ms", "p90_ms", "p99_ms")}
    write_summary(table, out, "queue_load", header, formats, notes)
    return out


def _header(spec: Any, table: pd.DataFrame, grid: int, jobs: int, machine: str) -> list[str]:
    return [
        f"### The queue actor under load: `{spec.name}`'s {grid} grid jobs drawn to {jobs}, "
        "jobs that do nothing",
        "",
        machine,
        "",
        f"Worker loops as threads of {int(table['runners'].max())} Ray actor processes "
        f"at most (not one process each), {WORKERS_PER_NODE} per fake node; the driver "
        f"polls stats every {STATS_POLL_S:g} s. Latency: one queue call (lease or finish) "
        "as its worker sees it.",
    ]


def _notes(table: pd.DataFrame, in_process: float, pickle_us: float) -> list[str]:
    low = table.loc[table["jobs_per_s"].idxmin()]
    met = "met" if bool(table["bar_met"].all()) else "NOT met"
    return [
        f"Bar: >= {BAR_JOBS_PER_S:,.0f} jobs/s at every worker count: {met} (lowest "
        f"{low['jobs_per_s']:,.0f} jobs/s, at {int(low['workers'])} workers).",
        f"For comparison: the queue's own methods in-process (lease + finish, no Ray) serve "
        f"{in_process:,.0f} jobs/s; pickling and unpickling one finish answer takes "
        f"{pickle_us:.0f} us.",
    ]
