"""Executors: how a job list runs. Same jobs, same worker loop, different dispatch.

* ``serial``: one in-process worker, jobs one at a time, every core given to torch (or
  ``threads``): the baseline, and a debug executor that shares the Ray path's code.
* ``ray``: a JobQueue actor, a ResultsCollector actor on the driver's node, a utilisation
  sampler per node, and one CoreGroupWorker actor per core group on every node, each pinned
  to its disjoint CPUs. Workers live across jobs; a dead worker's job is retried.

Executors are looked up by name in :data:`EXECUTORS` (:func:`get_executor`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raynn.data import ArrayDataset
from raynn.errors import RaynnError
from raynn.grid import Job
from raynn.results import ResultsCollector
from raynn.scheduler.cores import (
    check_cores_per_job,
    core_groups,
    resolve_cores_per_job,
    usable_cpus,
)
from raynn.scheduler.monitor import Progress, UtilizationSampler
from raynn.scheduler.queue import JobQueue
from raynn.scheduler.workers import CoreGroupWorker, call
from raynn.spec import SchedulingSpec
from raynn.training import JobResult


@dataclass
class Execution:
    """What an executor did: recorded in ``run.json``."""

    executor: str
    workers: int
    cores_per_job: int
    nodes: dict[str, list[int]] = field(default_factory=dict)
    worker_restarts: int = 0


class Executor(ABC):
    """Runs a list of jobs and writes each result through a collector."""

    name: str = ""

    @abstractmethod
    def prepare(
        self, n_jobs: int, cores_per_job: int | str, choose: Callable[[int], int] | None = None
    ) -> int:
        """Connect to compute and check the core setting; returns the resolved group size.

        With ``cores_per_job == "auto"``, ``choose(cores of the largest node)`` picks the size
        when given (the probe's choice); otherwise the contract's default rule applies.
        """

    @abstractmethod
    def execute(
        self,
        jobs: list[Job],
        data: ArrayDataset,
        run_dir: str,
        *,
        scheduling: SchedulingSpec,
        progress: Progress,
    ) -> Execution:
        """Run ``jobs`` to completion, writing results under ``run_dir``."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what :meth:`prepare` acquired."""


def _watch(queue: Any, progress: Progress, until: Callable[[], bool], poll: float = 0.5) -> None:
    while not until():
        progress.update(call(queue, "stats"))
        time.sleep(poll)


class SerialExecutor(Executor):
    """One job at a time in this process, with all cores (or ``threads``) given to torch."""

    name = "serial"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def prepare(self, n_jobs, cores_per_job, choose=None):
        self.threads = self.threads or len(usable_cpus())
        return self.threads

    def execute(self, jobs, data, run_dir, *, scheduling, progress):
        queue = JobQueue(jobs, max_attempts=scheduling.max_attempts)
        collector = ResultsCollector(run_dir)
        node = socket.gethostname()
        sampler = UtilizationSampler(node, scheduling.sample_interval)
        worker = CoreGroupWorker(
            "serial-0", None, data, queue, collector, node=node, threads=self.threads
        )
        error: list[BaseException] = []

        def target() -> None:
            try:
                worker.run()
            except BaseException as exc:  # surfaced in the driver thread below
                error.append(exc)

        thread = threading.Thread(target=target, name="raynn-serial", daemon=True)
        sampler.start()
        thread.start()
        try:
            _watch(queue, progress, lambda: not thread.is_alive())
        finally:
            collector.write_utilization(node, sampler.stop())
        progress.close(queue.stats())
        if error:
            raise error[0]
        return Execution(self.name, 1, worker.threads, {node: usable_cpus()})


@dataclass
class _Node:
    node_id: str
    name: str
    cpus: list[int]


class RayExecutor(Executor):
    """Pinned, long-lived worker actors pulling from a central queue actor.

    Args:
        address: a Ray cluster address (``auto``, ``ray://...``, ``host:port``); None starts an
            embedded local Ray, unless ``RAY_ADDRESS`` is set (as under ``ray job submit``).
        num_cpus: CPUs of the embedded local Ray (default: this process's affinity).
        max_workers: cap on worker actors (default: one per core group).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        max_workers: int | None = None,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.max_workers = max_workers
        self._owns_ray = False
        self._nodes: list[_Node] = []
        self._cores_per_job = 1

    # -- connection and nodes ---------------------------------------------------------------
    def _connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if self.address is None and not os.environ.get("RAY_ADDRESS"):
                ray.init(
                    address="local",
                    num_cpus=self.num_cpus or len(usable_cpus()),
                    include_dashboard=False,
                    **quiet,
                )
            else:
                ray.init(address=self.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or os.environ.get("RAY_ADDRESS")
            raise RaynnError(
                f"cannot connect to Ray at {where}: {exc}; start the cluster or fix --address"
            ) from None
        self._owns_ray = True

    def _probe_nodes(self) -> list[_Node]:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        @ray.remote(num_cpus=0)
        def node_info() -> tuple[str, list[int]]:
            return socket.gethostname(), sorted(os.sched_getaffinity(0))

        alive = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1]
        alive.sort(key=lambda n: (not n.get("IsHeadNode", False), n["NodeID"]))
        refs = [
            node_info.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote()
            for n in alive
        ]
        infos = ray.get(refs, timeout=120)
        hosts = [h for h, _ in infos]
        used: dict[str, int] = {}
        nodes = []
        for n, (host, cpus) in zip(alive, infos, strict=True):
            count = min(int(n["Resources"]["CPU"]), len(cpus))
            # Several raylets on one host (a local test cluster) get disjoint CPUs when they fit.
            offset = used.get(host, 0)
            if offset + count > len(cpus):
                offset = 0
            used[host] = offset + count
            name = host if hosts.count(host) == 1 else f"{host}:{n['NodeID'][:6]}"
            nodes.append(_Node(n["NodeID"], name, cpus[offset : offset + count]))
        return nodes

    def prepare(self, n_jobs, cores_per_job, choose=None):
        import ray

        embedded = (
            not ray.is_initialized() and self.address is None and not os.environ.get("RAY_ADDRESS")
        )
        if embedded and cores_per_job != "auto":  # fail before starting Ray at all
            check_cores_per_job(int(cores_per_job), [self.num_cpus or len(usable_cpus())])
        self._connect()
        if embedded:  # one node, this machine: no need to ask it for its CPUs
            node_id = ray.get_runtime_context().get_node_id()
            self._nodes = [_Node(node_id, socket.gethostname(), usable_cpus(self.num_cpus))]
        else:
            self._nodes = self._probe_nodes()
        sizes = [len(n.cpus) for n in self._nodes]
        if cores_per_job != "auto":
            check_cores_per_job(int(cores_per_job), sizes)
        if cores_per_job == "auto" and choose is not None:
            size = choose(max(sizes))
        else:
            size = resolve_cores_per_job(cores_per_job, n_jobs, sum(sizes))
        self._cores_per_job = min(size, max(sizes))
        return self._cores_per_job

    def close(self) -> None:
        import ray

        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    # -- execution ----------------------------------------------------------------------------
    def _slots(self, n_jobs: int) -> list[tuple[_Node, tuple[int, ...]]]:
        """(node, core group) pairs, round-robin over nodes, capped by jobs and max_workers."""
        per_node = [[(n, g) for g in core_groups(n.cpus, self._cores_per_job)] for n in self._nodes]
        slots = []
        for i in range(max((len(p) for p in per_node), default=0)):
            slots.extend(p[i] for p in per_node if i < len(p))
        return slots[: min(n_jobs, self.max_workers or n_jobs)]

    def execute(self, jobs, data, run_dir, *, scheduling, progress):
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        def on(node_id: str) -> dict[str, Any]:
            return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}

        driver_node = ray.get_runtime_context().get_node_id()
        queue = (
            ray.remote(num_cpus=0)(JobQueue)
            .options(**on(driver_node))
            .remote(jobs, scheduling.max_attempts, scheduling.tail_widening)
        )
        collector = (
            ray.remote(num_cpus=0)(ResultsCollector).options(**on(driver_node)).remote(run_dir)
        )
        samplers = {}
        for node in self._nodes:
            samplers[node.name] = (
                ray.remote(num_cpus=0)(UtilizationSampler)
                .options(**on(node.node_id))
                .remote(node.name, scheduling.sample_interval)
            )
            samplers[node.name].start.remote()
        data_ref = ray.put(data)
        worker_cls = ray.remote(num_cpus=1, max_restarts=0)(CoreGroupWorker)
        slots = self._slots(len(jobs))
        running: dict[Any, tuple[str, Any, _Node, tuple[int, ...]]] = {}
        restarts = 0

        def start(node: _Node, group: tuple[int, ...], worker_id: str) -> None:
            n = str(len(group))
            actor = worker_cls.options(
                num_cpus=len(group),
                name=None,
                **on(node.node_id),
                runtime_env={"env_vars": {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}},
            ).remote(worker_id, group, data_ref, queue, collector, node.name)
            running[actor.run.remote()] = (worker_id, actor, node, group)

        for i, (node, group) in enumerate(slots):
            start(node, group, f"w{i}")
        self.queue, self.workers = queue, running  # exposed for monitoring and fault tests
        try:
            while running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for ref in ready:
                    worker_id, actor, node, group = running.pop(ref)
                    try:
                        ray.get(ref)
                    except RayActorError:
                        exhausted = ray.get(queue.release_worker.remote(worker_id))
                        for job, attempt in exhausted:
                            failed = JobResult.failed(
                                job,
                                f"worker died on attempt {attempt} (max_attempts reached)",
                                attempt,
                            )
                            ray.get(collector.write_job.remote(failed))
                        stats = ray.get(queue.stats.remote())
                        if stats.pending and restarts < len(jobs) * scheduling.max_attempts:
                            restarts += 1
                            start(node, group, f"{worker_id.split('.')[0]}.{restarts}")
                    except RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        raise (cause if isinstance(cause, RaynnError) else exc) from None
                    else:
                        ray.kill(actor)
                progress.update(ray.get(queue.stats.remote()))
            progress.close(ray.get(queue.stats.remote()))
        finally:
            for _, actor, _, _ in running.values():
                ray.kill(actor)
            for name, sampler in samplers.items():
                try:
                    rows = ray.get(sampler.stop.remote(), timeout=30)
                    ray.get(collector.write_utilization.remote(name, rows))
                except (RayActorError, GetTimeoutError):
                    pass
                ray.kill(sampler)
            ray.kill(queue)
            ray.kill(collector)
        return Execution(
            self.name,
            len(slots),
            self._cores_per_job,
            {n.name: n.cpus for n in self._nodes},
            restarts,
        )


EXECUTORS: dict[str, type[Executor]] = {"serial": SerialExecutor, "ray": RayExecutor}


def get_executor(name: str, **kwargs: Any) -> Executor:
    """An executor by name; unknown names list the valid ones."""
    try:
        cls = EXECUTORS[name]
    except KeyError:
        raise RaynnError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}") from None
    return cls(**kwargs)
