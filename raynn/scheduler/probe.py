"""A short probe of each model: training steps per second at 1, 2 and 4 threads.

It calibrates the cost model (jobs run longest-expected-first by measured seconds, not by a
FLOP count that misjudges depthwise convolutions and batch norm), picks each model's cores
per job for ``cores_per_job: auto`` from simulated makespans, and caps how far tail
widening gives a job more threads.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from raynn.data import ArrayDataset, to_tensor
from raynn.grid import Job, build_model
from raynn.spec import Component

THREADS = (1, 2, 4)


def probe_model(
    component: Component,
    data: ArrayDataset,
    batch_size: int,
    threads: Sequence[int] = THREADS,
    steps: int = 3,
    max_batch: int = 16,
    enough_seconds: float = 0.25,
) -> dict[int, float]:
    """Training samples per second of one model at each thread count (SGD steps).

    Kept short on purpose (it is part of the run's start-up): one warm-up step, then up to
    ``steps`` timed steps per thread count (fewer once ``enough_seconds`` have passed) on a
    batch of at most ``max_batch`` samples.
    """
    before = torch.get_num_threads()
    torch.manual_seed(0)
    model = build_model(component, data.in_shape, data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    norm = (torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1))
    idx = np.arange(min(batch_size, max_batch, len(data.y_train)))
    xb, yb = to_tensor(data.x_train, idx, *norm), torch.from_numpy(data.y_train[idx])
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        opt.step()

    speeds = {}
    try:
        model.train()
        torch.set_num_threads(threads[0])
        step()  # warm-up: first-call allocations
        for t in threads:
            torch.set_num_threads(t)
            t0 = time.perf_counter()
            done = 0
            while done < steps and (done == 0 or time.perf_counter() - t0 < enough_seconds):
                step()
                done += 1
            speeds[t] = done * len(idx) / max(time.perf_counter() - t0, 1e-9)
    finally:
        torch.set_num_threads(before)
    return speeds


def useful_threads(speeds: dict[int, float], min_gain: float = 1.15) -> int:
    """The most threads that still pay: each step up must be ``min_gain`` times faster than
    the step before; the first step that is not ends the climb."""
    counts = sorted(speeds)
    best = counts[0]
    for t in counts[1:]:
        if speeds[t] < speeds[best] * min_gain:
            break
        best = t
    return best


def calibrate(
    jobs: Sequence[Job], data: ArrayDataset, cores: int
) -> tuple[list[Job], dict[str, dict[int, float]]]:
    """Probe each model once; return jobs with measured costs (seconds at one thread) and
    ``max_threads``, ordered longest first, plus the probe's speeds per model label."""
    threads = [t for t in THREADS if t <= max(cores, 1)]
    speeds: dict[str, dict[int, float]] = {}
    for job in jobs:
        if job.model.label not in speeds:
            speeds[job.model.label] = probe_model(job.model, data, job.training.batch_size, threads)
    out = []
    for job in jobs:
        s = speeds[job.model.label]
        samples = len(data.folds[job.fold][0]) * job.training.epochs
        out.append(dataclasses.replace(job, cost=samples / s[1], max_threads=useful_threads(s)))
    out.sort(key=lambda j: (-j.cost, j.index))
    return out, speeds


def job_seconds(job: Job, speeds: dict[str, dict[int, float]], cores: int) -> float:
    """Expected seconds of ``job`` on ``cores`` threads (the probe's speed at that count)."""
    s = speeds[job.model.label]
    return job.cost * s[1] / s.get(cores, s[max(s)])


def predicted_makespan(
    jobs: Sequence[Job],
    speeds: dict[str, dict[int, float]],
    sizes: dict[str, int],
    nodes: Sequence[int],
) -> float:
    """Simulate the queue: seconds until every job is done with ``sizes[model]`` cores each.

    The queue's own policy (:meth:`raynn.scheduler.queue.JobQueue.lease`): jobs in the given
    (longest-first) order; whenever cores free up, each pending job that fits a node's free
    cores starts there, first fit. ``nodes``: the cores of each node. Tail widening is left
    out, so the prediction errs long for the last jobs.
    """
    free = list(nodes)
    pending = [(j, sizes[j.model.label]) for j in jobs]
    running: list[tuple[float, int, int]] = []  # (end, node, cores)
    now = 0.0
    while pending:
        waiting = []
        for job, need in pending:
            node = next((n for n, f in enumerate(free) if f >= need), None)
            if node is None:
                waiting.append((job, need))
            else:
                free[node] -= need
                heapq.heappush(running, (now + job_seconds(job, speeds, need), node, need))
        pending = waiting
        if not running:  # what is left fits no node
            return math.inf
        now, node, need = heapq.heappop(running)
        free[node] += need
    return max([now] + [end for end, _, _ in running])


def auto_group_sizes(
    jobs: Sequence[Job], speeds: dict[str, dict[int, float]], nodes: Sequence[int]
) -> dict[str, int]:
    """Cores per job for each model (``cores_per_job: auto``), from the probe's speeds.

    Starts from the best uniform size, then tries each model (most work first) at every
    probed size that fits the largest node, keeping a change that shortens the predicted
    makespan (:func:`predicted_makespan`) by 5% or more, or a smaller size that is no worse:
    fewer threads per job are preferred unless clearly better. Repeats until nothing changes.
    """
    labels = list(dict.fromkeys(j.model.label for j in jobs))
    if not labels:
        return {}
    work = {m: sum(j.cost for j in jobs if j.model.label == m) for m in labels}
    labels.sort(key=lambda m: -work[m])
    options = sorted({t for m in labels for t in speeds[m] if t <= max(nodes)}) or [1]

    def makespan(sizes: dict[str, int]) -> float:
        return predicted_makespan(jobs, speeds, sizes, nodes)

    def better(new: float, old: float, grows: bool) -> bool:
        return new < old * 0.95 if grows else new <= old

    best = {m: options[0] for m in labels}
    best_time = makespan(best)
    for size in options[1:]:
        trial = {m: size for m in labels}
        if better(t := makespan(trial), best_time, grows=True):
            best, best_time = trial, t
    for _ in range(3):
        changed = False
        for m in labels:
            for size in options:
                if size == best[m]:
                    continue
                trial = {**best, m: size}
                if better(t := makespan(trial), best_time, grows=size > best[m]):
                    best, best_time, changed = trial, t, True
        if not changed:
            break
    return best
