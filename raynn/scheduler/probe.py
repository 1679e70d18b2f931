"""A short probe of each model: training steps per second at 1, 2 and 4 threads.

It calibrates the cost model (jobs run longest-expected-first by measured seconds, not by a
FLOP count that misjudges depthwise convolutions and batch norm), picks ``cores_per_job:
auto`` from predicted makespans, and caps how far tail widening gives a job more threads.
"""

from __future__ import annotations

import dataclasses
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


def predicted_makespan(
    jobs: Sequence[Job], speeds: dict[str, dict[int, float]], group: int, cores: int
) -> float:
    """Greedy LPT simulation of the run at ``group`` cores per job."""
    slots = max(1, cores // group)
    finish = [0.0] * min(slots, len(jobs))
    for job in jobs:  # already longest first
        s = speeds[job.model.label]
        seconds = job.cost * s[1] / s.get(group, s[max(s)])
        i = finish.index(min(finish))
        finish[i] += seconds
    return max(finish, default=0.0)


def auto_group_size(jobs: Sequence[Job], speeds: dict[str, dict[int, float]], cores: int) -> int:
    """The group size in (1, 2, 4) with the shortest predicted makespan."""
    best, best_time = 1, math.inf
    for group in sorted({t for s in speeds.values() for t in s}):
        if group > cores:
            continue
        predicted = predicted_makespan(jobs, speeds, group, cores)
        if predicted < best_time * 0.95:  # prefer fewer threads unless clearly better
            best, best_time = group, predicted
    return best
