"""A short probe of each model: training steps per second at 1, 2 and 4 threads.

It calibrates the cost model (jobs run longest-expected-first by measured seconds, not by a
FLOP count that misjudges depthwise convolutions and batch norm), picks each model's cores
per job for ``cores_per_job: auto`` from simulated makespans, and caps how far tail
widening gives a job more threads.

A probe takes about half a second a model, all of it before the first job can start, and
its answer depends only on the model, its input, the batch, the thread counts and the
machine. So it is kept in a cache (:class:`ProbeCache`, ``$RAYNN_CACHE_DIR/probe.json``,
default ``~/.cache/raynn``), keyed by all of those plus the CPU model and the torch and
raynn versions; only models it does not hold are probed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import math
import os
import platform
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from raynn._version import __version__
from raynn.core.data import ArrayDataset
from raynn.core.model_builder import build_model
from raynn.kfold.grid import Job
from raynn.spec import Component

THREADS = (1, 2, 4)
PROBE_VERSION = 1  # bump when probe_model measures differently: old entries no longer match


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
    idx = np.arange(min(batch_size, max_batch, len(data.y_train)))
    xb, yb = data.normalizer()(data.x_train, idx), torch.from_numpy(data.y_train[idx])
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


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class ProbeCache:
    """Probe results on disk, one entry per (model, input, batch, threads, machine, versions).

    Models given as Python callables (``Component.factory``) are never cached: nothing
    names them across runs. A cache that cannot be read or written is ignored.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        root = os.environ.get("RAYNN_CACHE_DIR") or Path.home() / ".cache" / "raynn"
        self.path = Path(path) if path is not None else Path(root) / "probe.json"
        try:
            self.entries: dict[str, dict[str, float]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def key(
        component: Component, data: ArrayDataset, batch_size: int, threads: Sequence[int]
    ) -> str | None:
        if component.factory is not None:
            return None
        ident = {
            "model": component.name,
            "args": sorted(component.args.items()),
            "in_shape": list(data.in_shape),
            "classes": data.num_classes,
            "batch": min(batch_size, 16, len(data.y_train)),
            "threads": list(threads),
            "cpu": _cpu_model(),
            "torch": torch.__version__,
            "raynn": __version__,
            "probe": PROBE_VERSION,
        }
        blob = json.dumps(ident, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    def get(self, key: str | None) -> dict[int, float] | None:
        entry = self.entries.get(key) if key else None
        return {int(t): float(v) for t, v in entry.items()} if entry else None

    def put(self, key: str | None, speeds: dict[int, float]) -> None:
        if key:
            self.entries[key] = {str(t): v for t, v in speeds.items()}

    def save(self) -> None:
        from raynn.errors import OutputError
        from raynn.runs.files import write_json

        try:
            write_json(self.path, self.entries, follow_links=True)  # the user's cache folder
        except OutputError:  # no writable cache: the next run probes again
            pass


@dataclasses.dataclass
class ProbeReport:
    """What a calibration did: models read from the cache, models probed, seconds spent."""

    cached: list[str] = dataclasses.field(default_factory=list)
    measured: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def calibrate(
    jobs: Sequence[Job],
    data: ArrayDataset,
    cores: int,
    cache: ProbeCache | None = None,
    report: ProbeReport | None = None,
) -> tuple[list[Job], dict[str, dict[int, float]]]:
    """Probe each model once (or read it from ``cache``); return jobs with measured costs
    (seconds at one thread) and ``max_threads``, ordered longest first, plus the probe's
    speeds per model label. ``report`` (if given) says what was cached and what probed."""
    t0 = time.perf_counter()
    report = report if report is not None else ProbeReport()
    threads = [t for t in THREADS if t <= max(cores, 1)]
    speeds: dict[str, dict[int, float]] = {}
    for job in jobs:
        label = job.model.label
        if label in speeds:
            continue
        key = cache.key(job.model, data, job.training.batch_size, threads) if cache else None
        found = cache.get(key) if cache else None
        if found is not None:
            speeds[label] = found
            report.cached.append(label)
            continue
        speeds[label] = probe_model(job.model, data, job.training.batch_size, threads)
        report.measured.append(label)
        if cache is not None:
            cache.put(key, speeds[label])
    if cache is not None and report.measured:
        cache.save()
    report.seconds = time.perf_counter() - t0
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

    The queue's own policy (:meth:`raynn.kfold.queue.JobQueue.lease`): jobs in the given
    (longest-first) order; whenever cores free up, each pending job that fits a node's free
    cores starts there, first fit. ``nodes``: the cores of each node. Tail widening is left
    out, so the prediction errs long for the last jobs.

    O(n log n) for n jobs: the pending jobs wait in one queue per core count, so the next to
    start is the earliest of those queues' heads that fits (a job that does not fit now fits
    no better until cores free up).
    """
    free = list(nodes)
    pending: dict[int, deque[tuple[int, Job]]] = {}
    for i, job in enumerate(jobs):
        pending.setdefault(sizes[job.model.label], deque()).append((i, job))
    running: list[tuple[float, int, int]] = []  # (end, node, cores)
    now = 0.0
    while pending:
        _start_fitting(pending, free, running, now, speeds)
        if not running:  # what is left fits no node
            return math.inf
        now, node, need = heapq.heappop(running)
        free[node] += need
    return max([now] + [end for end, _, _ in running])


def _start_fitting(
    pending: dict[int, deque[tuple[int, Job]]],
    free: list[int],
    running: list[tuple[float, int, int]],
    now: float,
    speeds: dict[str, dict[int, float]],
) -> None:
    """Start, in order, every pending job that fits a node's free cores (first fit)."""
    while pending:
        room = max(free)
        heads = [(q[0][0], need) for need, q in pending.items() if need <= room]
        if not heads:
            return
        need = min(heads)[1]
        job = pending[need].popleft()[1]
        if not pending[need]:
            del pending[need]
        node = next(n for n, f in enumerate(free) if f >= need)
        free[node] -= need
        heapq.heappush(running, (now + job_seconds(job, speeds, need), node, need))


def makespan_bound(
    work: dict[str, tuple[float, float]],
    speeds: dict[str, dict[int, float]],
    sizes: dict[str, int],
    cores: int,
) -> float:
    """A lower bound of :func:`predicted_makespan`, in O(models): the longest job, or every
    job's core-seconds spread over all ``cores``. ``work``: each model's total and largest
    job cost (seconds on one thread)."""
    longest = total = 0.0
    for m, (cost, largest) in work.items():
        s, t = speeds[m], sizes[m]
        slow = s[1] / s.get(t, s[max(s)])
        longest, total = max(longest, largest * slow), total + cost * slow * t
    return max(longest, total / cores)


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
    work = {m: (0.0, 0.0) for m in labels}
    for j in jobs:
        total, largest = work[j.model.label]
        work[j.model.label] = (total + j.cost, max(largest, j.cost))
    labels.sort(key=lambda m: -work[m][0])
    options = sorted({t for m in labels for t in speeds[m] if t <= max(nodes)}) or [1]

    def better(new: float, old: float, grows: bool) -> bool:
        return new < old * 0.95 if grows else new <= old

    def makespan(sizes: dict[str, int], old: float, grows: bool) -> float:
        """The simulated makespan, or the bound where the bound alone rules the trial out
        (on large grids, nearly every trial: a simulation is O(n log n), the bound O(1))."""
        bound = makespan_bound(work, speeds, sizes, sum(nodes))
        if not better(bound, old, grows):
            return bound
        return predicted_makespan(jobs, speeds, sizes, nodes)

    best = {m: options[0] for m in labels}
    best_time = predicted_makespan(jobs, speeds, best, nodes)
    for size in options[1:]:
        trial = {m: size for m in labels}
        if better(t := makespan(trial, best_time, True), best_time, grows=True):
            best, best_time = trial, t
    for _ in range(3):
        changed = False
        for m in labels:
            for size in options:
                if size == best[m]:
                    continue
                trial, grows = {**best, m: size}, size > best[m]
                if better(t := makespan(trial, best_time, grows), best_time, grows):
                    best, best_time, changed = trial, t, True
        if not changed:
            break
    return best
