"""``raynn bench scale --queue-workers``: the summary of the queue actor's runs (medians per
worker count and prefetch, the bar), and what to compare it with: the queue's own methods
in-process, and the pickling of one answer."""

from __future__ import annotations

import pickle
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from raynn.kfold.grid import Job
from raynn.kfold.handover import PREFETCH_MAX
from raynn.kfold.messages import Grant, Outcome, Retire
from raynn.kfold.queue import JobQueue

BAR_JOBS_PER_S = 2000.0  # issue 23: the queue sustains at least this many jobs a second
WORKERS_PER_NODE = 8  # worker loops per fake node name
STATS_POLL_S = 0.5  # the driver polls the queue's stats this often, as RayRun._drive does
METRICS = {"val_accuracy": 0.5, "val_loss": 1.0}  # what a worker reports with an ok job
SUMMARY_COLUMNS = [
    "workers", "prefetch", "runners", "nodes", "jobs", "repeats", "seconds", "jobs_per_s",
    "jobs_per_s_min", "jobs_per_s_max", "p50_ms", "p90_ms", "p99_ms", "waits", "bar_met",
]  # fmt: skip


def fake_slot(index: int, per_node: int = WORKERS_PER_NODE) -> tuple[str, int]:
    """Worker ``index``'s fake node name and core id: ``per_node`` workers a node."""
    return f"fake{index // per_node}", index % per_node


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per worker count and prefetch: medians over the repeats, the rate's spread
    (min and max), and whether the median rate meets the bar."""
    by = runs.groupby(["workers", "prefetch"], sort=False)
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
                done = [Outcome(held.pop(worker), metrics=METRICS, epochs=1)]
                _, answer = queue.finish(worker, done)
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


def header_for(spec: Any, table: pd.DataFrame, grid: int, jobs: int, machine: str) -> list[str]:
    """The summary's heading lines."""
    return [
        f"### The queue actor under load: `{spec.name}`'s {grid} grid jobs drawn to {jobs}, "
        "jobs that do nothing",
        "",
        machine,
        "",
        f"Worker loops as threads of {int(table['runners'].max())} Ray actor processes "
        f"at most (not one process each), {WORKERS_PER_NODE} per fake node; the driver "
        f"polls stats every {STATS_POLL_S:g} s. Latency: one queue call (lease or finish, "
        "for one job or a batch) as its worker sees it.",
    ]


def notes_for(table: pd.DataFrame, in_process: float, pickle_us: float) -> list[str]:
    """The summary's notes: the bar, and what to compare the rates with."""
    most = int(table["prefetch"].max())
    batched = table[table["prefetch"] == most]
    low = batched.loc[batched["jobs_per_s"].idxmin()]
    met = "met" if bool(batched["bar_met"].all()) else "NOT met"
    return [
        f"Bar: >= {BAR_JOBS_PER_S:,.0f} jobs/s at every worker count, with leases of up to "
        f"{most} job(s): {met} (lowest {low['jobs_per_s']:,.0f} jobs/s, at "
        f"{int(low['workers'])} workers). Prefetch 1 is a queue call per job; raynn's workers "
        f"ask for up to {PREFETCH_MAX} after jobs that take no time "
        "(`raynn.kfold.handover.want`).",
        f"For comparison: the queue's own methods in-process (lease + finish, no Ray) serve "
        f"{in_process:,.0f} jobs/s; pickling and unpickling one finish answer takes "
        f"{pickle_us:.0f} us.",
    ]
