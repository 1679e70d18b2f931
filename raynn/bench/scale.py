"""``raynn bench scale``: the scheduling policy at 1,024 cores and more, simulated.

A discrete-event simulation drives the real :class:`~raynn.kfold.queue.JobQueue` (the jobs
in the given order, first fit, tail widening) on a simulated clock, the jobs once longest
first and once in the order a run plans (:func:`raynn.kfold.packing.planned_order`): one
worker per core on nodes of ``--node-cores`` cores, each job taking the seconds the probe
predicts for its model at the threads it holds (:func:`raynn.kfold.probe.job_seconds`), an
epoch at a time, so that tail widening acts at epoch boundaries as it does in a run. The
jobs are the spec's grid, drawn with replacement until there are ``jobs_per_core`` per core
(the grid's own job-time distribution, measured by the probe on this machine).

It answers how close the policy gets to the lower bound ``max(longest job, total work /
cores)`` (``efficiency``: bound / makespan; ``pair_efficiency`` against a bound no schedule
beats either, :func:`pair_bound`), and how many queue calls a second the queue
itself serves in-process (``queue_calls_per_s``: lease, progress and complete, the
simulation's own overhead included). Not simulated: fold racing, worker start-up, deaths,
and the calls' trip through Ray.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raynn.kfold.grid import Job
from raynn.kfold.messages import Grant, Retire, Stop, Widen
from raynn.kfold.packing import planned_order
from raynn.kfold.probe import job_seconds
from raynn.kfold.queue import JobQueue

Speeds = dict[str, dict[int, float]]


@dataclasses.dataclass
class Simulated:
    """One simulated run: its size, makespan, the lower bound and the queue's pace."""

    cores: int
    jobs: int
    makespan_s: float
    bound_s: float
    efficiency: float
    pair_bound_s: float  # max(bound_s, pair_bound): the schedule can be no shorter either
    pair_efficiency: float
    widened: int  # epoch ends at which a job got more cores (tail widening)
    queue_calls: int
    queue_calls_per_s: float  # in-process, real time


@dataclasses.dataclass
class _Running:
    job: Job
    epoch: int = 0
    threads: int = 1


def draw_jobs(jobs: Sequence[Job], count: int, seed: int = 0) -> list[Job]:
    """``count`` jobs drawn with replacement from ``jobs`` (unique ids), longest first."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(jobs), size=count)
    drawn = [
        dataclasses.replace(jobs[p], job_id=f"{jobs[p].job_id}#{i}", index=i)
        for i, p in enumerate(picks)
    ]
    drawn.sort(key=lambda j: (-j.cost, j.index))
    return drawn


def _fastest(job: Job, speeds: Speeds) -> float:
    """``job``'s seconds at its fastest thread count (up to its ``max_threads``)."""
    return min(job_seconds(job, speeds, t) for t in range(1, max(job.max_threads, 1) + 1))


def _least_work(job: Job, speeds: Speeds) -> float:
    """``job``'s fewest core-seconds: at one thread, unless a probe measured a speed-up of
    more than the threads (a loaded machine's noise)."""
    threads = range(1, max(job.max_threads, 1) + 1)
    return min(t * job_seconds(job, speeds, t) for t in threads)


def lower_bound(jobs: Sequence[Job], speeds: Speeds, cores: int) -> float:
    """``max(longest job at its fastest, total work at its fewest core-seconds / cores)``:
    the longest job at its most useful threads, and the total one-thread work, unless the
    probe measured more than linear speed-ups."""
    longest = max(_fastest(j, speeds) for j in jobs)
    return max(longest, sum(_least_work(j, speeds) for j in jobs) / cores)


def pair_bound(jobs: Sequence[Job], speeds: Speeds, cores: int) -> float:
    """Twice the ``cores + 1``-th longest job at its most useful threads (0 with no more jobs
    than cores): of the ``cores + 1`` longest jobs, two share a core one after the other,
    since each holds a core throughout and a schedule shorter than twice the shortest of
    them would have all of them running at its midpoint. A bound as sure as
    :func:`lower_bound`, and tighter when the longest jobs outnumber the cores."""
    if len(jobs) <= cores:
        return 0.0
    fastest = sorted((_fastest(j, speeds) for j in jobs), reverse=True)
    return 2 * fastest[cores]


def simulate(
    jobs: Sequence[Job],
    speeds: Speeds,
    cores: int,
    node_cores: int = 64,
    tail_widening: bool = True,
) -> Simulated:
    """Run ``jobs`` through a real :class:`JobQueue` on ``cores`` simulated cores."""
    clock = [0.0]
    queue = JobQueue(jobs, max_attempts=1, tail_widening=tail_widening, clock=lambda: clock[0])
    events: list[tuple[float, int, str]] = []  # (time, sequence, worker)
    for core in range(cores):
        worker = f"w{core}"
        queue.register(worker, f"n{core // node_cores}", [core % node_cores])
        heapq.heappush(events, (0.0, core, worker))
    running: dict[str, _Running] = {}
    calls, widened, seq, began = 0, 0, cores, time.perf_counter()
    while events:
        clock[0], _, worker = heapq.heappop(events)
        state = running.get(worker)
        if state is None:  # asks for a job
            after, made = _lease(queue, worker, running, speeds), 1
        else:  # an epoch of its job ended
            after, made, grew = _epoch_end(queue, worker, state, running, speeds)
            widened += grew
        calls += made
        if after is not None:
            seq += 1
            heapq.heappush(events, (clock[0] + after, seq, worker))
    real = time.perf_counter() - began
    bound = lower_bound(jobs, speeds, cores)
    pair = max(bound, pair_bound(jobs, speeds, cores))
    return Simulated(
        cores, len(jobs), clock[0], bound, bound / clock[0], pair, pair / clock[0], widened,
        calls, calls / real,
    )  # fmt: skip


def _epoch(job: Job, speeds: Speeds, threads: int) -> float:
    return job_seconds(job, speeds, threads) / max(job.training.epochs, 1)


def _lease(
    queue: JobQueue, worker: str, running: dict[str, _Running], speeds: Speeds
) -> float | None:
    """The worker asks: seconds until its next event (None: it retired)."""
    answer = queue.lease(worker)
    if isinstance(answer, Retire):
        return None
    if not isinstance(answer, Grant):  # Wait: cores busy, ask again
        return answer.seconds
    threads = max(len(answer.cores), 1)
    running[worker] = _Running(answer.job, 0, threads)
    return _epoch(answer.job, speeds, threads)


def _epoch_end(
    queue: JobQueue, worker: str, state: _Running, running: dict[str, _Running], speeds: Speeds
) -> tuple[float, int, int]:
    """An epoch ended: the queue's answer; seconds until the worker's next event, the queue
    calls made, and whether its job was widened."""
    state.epoch += 1
    answer = queue.progress(state.job.job_id, state.epoch)
    if state.epoch >= state.job.training.epochs or isinstance(answer, Stop):
        queue.complete(state.job.job_id, ok=True)
        del running[worker]
        return 0.0, 2, 0  # it asks for its next job at once
    grew = 0
    if isinstance(answer, Widen):
        state.threads, grew = len(answer.cores), 1
    return _epoch(state.job, speeds, state.threads), 1, grew


def vary(jobs: Sequence[Job], sigma: float, seed: int = 0) -> list[Job]:
    """``jobs`` (same order) each taking a lognormal factor (``sigma``, median 1) of its
    predicted seconds: what a run meets where the probe's prediction is off. The factor
    is the job's, drawn once by its position in ``sorted`` job ids, whatever the order."""
    if sigma <= 0:
        return list(jobs)
    ids = sorted(j.job_id for j in jobs)
    draws = np.random.default_rng(seed).lognormal(0.0, sigma, size=len(ids))
    factor = dict(zip(ids, draws, strict=True))
    return [dataclasses.replace(j, cost=j.cost * float(factor[j.job_id])) for j in jobs]


def bench_scale(
    jobs: Sequence[Job],
    speeds: Speeds,
    cores: Sequence[int],
    jobs_per_core: float = 4.0,
    node_cores: int = 64,
    seed: int = 0,
    noise: Sequence[float] = (0.0,),
) -> pd.DataFrame:
    """Simulated runs per core count: the jobs longest first and in planned order
    (:func:`raynn.kfold.packing.planned_order`, ``plan_s`` its seconds), each with and
    without tail widening, and at each ``noise`` (:func:`vary`; the plan is made from the
    predicted seconds): a table."""
    rows: list[dict[str, Any]] = []
    for n in cores:
        drawn = draw_jobs(jobs, max(1, math.ceil(n * jobs_per_core)), seed)
        began = time.perf_counter()
        planned = planned_order(drawn, lambda j: job_seconds(j, speeds, 1), n)
        plan_s = time.perf_counter() - began
        orders = (("longest_first", drawn, 0.0), ("planned", planned, plan_s))
        for sigma, (order, given, took) in itertools.product(noise, orders):
            for widening in (False, True):
                sim = simulate(vary(given, sigma, seed), speeds, n, node_cores, widening)
                row = {"noise": sigma, "order": order, "tail_widening": widening}
                rows.append({**row, **dataclasses.asdict(sim), "plan_s": took})
    return pd.DataFrame(rows)


def run_bench_scale(
    spec: Any,
    cores: Sequence[int],
    jobs_per_core: float,
    node_cores: int,
    output: str,
    noise: Sequence[float] = (0.0,),
) -> Path:
    """Probe the spec's models (or read the probe cache), simulate each core count, write
    the summary; the bench folder."""
    from raynn.bench.common import bench_folder, machine, machine_line, write_summary
    from raynn.kfold.probe import ProbeCache, calibrate
    from raynn.kfold.runner import prepare
    from raynn.placement.cores import usable_cpus

    plan = prepare(spec)
    jobs, speeds = calibrate(plan.jobs, plan.data, len(usable_cpus()), ProbeCache())
    table = bench_scale(jobs, speeds, cores, jobs_per_core, node_cores, noise=noise)
    out = bench_folder(output, f"scale_{spec.name}")
    probed = ", ".join(f"{m} {sorted(s)}" for m, s in speeds.items())
    header = [
        f"### `{spec.name}` scheduled on simulated cores ({len(jobs)} grid jobs drawn "
        f"{jobs_per_core:g} per core, nodes of {node_cores} cores)",
        "",
        machine_line(machine()) + f"; probed threads per model: {probed}",
        "",
        "efficiency = bound_s / makespan_s, bound = max(longest job, total work / cores); "
        "pair_efficiency = pair_bound_s / makespan_s, pair_bound = max(bound, twice the "
        "(cores + 1)-th longest job); noise: each job's seconds times a lognormal factor "
        "of that sigma, the same for both orders, which are planned without it",
    ]
    formats = {c: "{:.1f}" for c in ("makespan_s", "bound_s", "pair_bound_s")}
    formats["queue_calls_per_s"] = "{:.0f}"
    formats["plan_s"] = "{:.2f}"
    write_summary(table, out, "scale", header, formats)
    return out


__all__ = [
    "Simulated", "bench_scale", "draw_jobs", "lower_bound", "pair_bound", "run_bench_scale",
    "simulate", "vary",
]  # fmt: skip
