"""Watching a run: per-core CPU utilisation sampling and the live progress view."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from typing import Any

FINAL_SAMPLE_SECONDS = 0.05  # the tail after the last sample is sampled when this long


class UtilizationSampler:
    """Samples per-core CPU % of this node in a background thread (psutil).

    A plain class: the serial and local executors use it in-process, the Ray executor runs
    one per node as a zero-CPU actor. Given ``own_tree`` (a pid: that process and all its
    descendants) or ``own_pids`` (processes named now or later with :meth:`watch`), each
    row also carries ``own_percent``: the share of that core's time used by raynn's own
    processes, from the CPU-time deltas of each of their threads, spread evenly over the
    cores of that thread's affinity mask (exact for pinned threads). Without either it is
    None (not measured).
    """

    def __init__(
        self,
        node: str,
        interval: float = 0.5,
        *,
        own_tree: int | None = None,
        own_pids: Iterable[int] | None = None,
    ) -> None:
        self.node = node
        self.interval = interval
        self._rows: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tree = own_tree
        self._pids: set[int] = set(own_pids or ())
        self._measure_own = own_tree is not None or own_pids is not None
        self._lock = threading.Lock()
        self._cpu: dict[tuple[int, int], float] = {}  # (pid, tid) -> CPU seconds last seen
        self._seen: set[int] = set()  # pids whose threads have a baseline
        self._last = (0.0, 0.0)  # the last sample's time.time() and time.monotonic()

    def watch(self, pid: int) -> None:
        """Count process ``pid`` (all its threads) as raynn's own from now on."""
        with self._lock:
            self._pids.add(int(pid))
            self._measure_own = True

    def start(self) -> None:
        """Start sampling (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def _own_processes(self) -> list[Any]:
        import psutil

        with self._lock:
            pids = set(self._pids)
        procs = []
        if self._tree is not None:
            try:
                root = psutil.Process(self._tree)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = []
        known = {p.pid for p in procs}
        for pid in pids - known:
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                pass  # gone: its last interval is lost
        return procs

    def _own_percent(self, cores: int, since: float, now: float, dt: float) -> list[float]:
        """CPU % of each core used by the own processes' threads since the last call."""
        import psutil

        own = [0.0] * cores
        seen: set[int] = set()
        cpu: dict[tuple[int, int], float] = {}
        for proc in self._own_processes():
            try:
                threads = proc.threads()
                fresh = proc.pid not in self._seen and proc.create_time() >= since
            except psutil.Error:
                continue
            seen.add(proc.pid)
            for t in threads:
                total = t.user_time + t.system_time
                cpu[(proc.pid, t.id)] = total
                before = self._cpu.get((proc.pid, t.id))
                if before is None:  # a thread (or process) born since the last sample
                    if proc.pid in self._seen or fresh:
                        before = 0.0
                    else:  # already running when first seen: only a baseline now
                        continue
                try:
                    mask = [c for c in os.sched_getaffinity(t.id) if c < cores]
                except OSError:
                    continue  # the thread ended
                share = max(total - before, 0.0) / dt * 100.0 / max(len(mask), 1)
                for c in mask:
                    own[c] += share
        self._cpu, self._seen = cpu, seen
        return [min(v, 100.0) for v in own]

    def _loop(self) -> None:
        import psutil

        psutil.cpu_percent(percpu=True)  # the first call only primes the counters
        cores = len(psutil.cpu_percent(percpu=True))
        self._last = (time.time(), time.monotonic())
        if self._measure_own:
            self._own_percent(cores, self._last[0], self._last[0], 1.0)  # baselines
        while not self._stop.wait(self.interval):
            self._sample()
        if time.monotonic() - self._last[1] >= FINAL_SAMPLE_SECONDS or not self._rows:
            self._sample()  # the run's last part; a run shorter than the interval has one

    def _sample(self) -> None:
        """Append one row per core: its CPU % (and raynn's share) since the last sample."""
        import psutil

        now, mono = time.time(), time.monotonic()
        percent = psutil.cpu_percent(percpu=True)
        own: list[float | None] = [None] * len(percent)
        if self._measure_own:
            dt = max(mono - self._last[1], 1e-3)
            own = self._own_percent(len(percent), self._last[0], now, dt)
        for core, pct in enumerate(percent):
            self._rows.append(
                {
                    "node": self.node,
                    "time": now,
                    "core": core,
                    "percent": pct,
                    "own_percent": own[core],
                }
            )
        self._last = (now, mono)

    def stop(self) -> list[dict[str, Any]]:
        """Stop sampling and return the rows taken."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return list(self._rows)


class NodeSamplers:
    """One in-process :class:`UtilizationSampler` per node sampled from here (the local
    executor's one node; the joblib pool's driver node).

    Args:
        interval: seconds between samples.
        own_tree: count this process's tree as the run's own (else the pids watched).
        only: the names of the nodes to sample (None: every node added).
    """

    def __init__(
        self, interval: float, *, own_tree: int | None = None, only: Iterable[str] | None = None
    ) -> None:
        self.interval, self._tree = interval, own_tree
        self._only = None if only is None else set(only)
        self._samplers: dict[str, UtilizationSampler] = {}

    def add(self, node: Any) -> None:
        """Start sampling ``node`` (a :class:`~raynn.placement.nodes.Node`)."""
        if node.name in self._samplers or (self._only is not None and node.name not in self._only):
            return
        own_pids = None if self._tree is not None else ()
        sampler = UtilizationSampler(
            node.name, self.interval, own_tree=self._tree, own_pids=own_pids
        )
        sampler.start()
        self._samplers[node.name] = sampler

    def watch(self, node_name: str, pid: int) -> None:
        """Count ``pid`` (on ``node_name``) as the run's own."""
        sampler = self._samplers.get(node_name)
        if sampler is not None:
            sampler.watch(pid)

    def stop(self) -> dict[str, list[dict[str, Any]] | None]:
        """Stop every sampler: each node's rows."""
        return {name: sampler.stop() for name, sampler in self._samplers.items()}


class ActorSamplers:
    """A zero-CPU :class:`UtilizationSampler` actor on every node added (a Ray run's), but
    the node ``here`` (a Ray node id: the driver's), sampled in this process: one process
    fewer for Ray to start while the run starts.
    """

    def __init__(self, interval: float, here: str | None = None) -> None:
        self.interval = interval
        self._actors: dict[str, Any] = {}
        self._here, self._local = here, NodeSamplers(interval)

    def add(self, node: Any) -> None:
        """Start a sampler actor on ``node`` (a :class:`~raynn.placement.nodes.Node`)."""
        import ray

        from raynn.placement.nodes import on_node

        if node.node_id is not None and node.node_id == self._here:
            self._local.add(node)
            return
        if node.name in self._actors:
            return
        actor = (
            ray.remote(num_cpus=0)(UtilizationSampler)
            .options(**on_node(node.node_id))
            .remote(node.name, self.interval, own_pids=[])
        )
        actor.start.remote()
        self._actors[node.name] = actor

    def watch(self, node_name: str, pid: int) -> None:
        """Count ``pid`` (on ``node_name``) as the run's own."""
        actor = self._actors.get(node_name)
        if actor is not None:
            actor.watch.remote(pid)
        self._local.watch(node_name, pid)

    def stop(self) -> dict[str, list[dict[str, Any]] | None]:
        """Stop and kill every sampler actor: each node's rows (None: that node is gone)."""
        import ray
        from ray.exceptions import GetTimeoutError, RayError

        out = self._local.stop()
        for name, actor in self._actors.items():
            try:
                out[name] = ray.get(actor.stop.remote(), timeout=15)
            except (RayError, GetTimeoutError):
                out[name] = None  # that node is gone: its samples with it
            ray.kill(actor)
        return out
