"""Executors: how a job list runs. Same jobs, same worker loop, different dispatch.

* ``serial``: one in-process worker, jobs one at a time, every core given to torch (or
  ``threads``): the baseline, and a debug executor that shares the others' code.
* ``local`` (:mod:`raynn.scheduler.local`): this machine, one worker process per core group,
  forked from a zygote that holds torch and the data, pinned to its disjoint cores; the
  queue and the results live in the driver. What ``raynn run`` uses without a cluster.
* ``ray``: a Ray cluster (``--address``, ``RAY_ADDRESS`` under ``ray job submit``, or an
  embedded local Ray): a JobQueue actor, a ResultsCollector actor on the driver's node, a
  utilisation sampler per node, and one CoreGroupWorker actor per core group on every node,
  each pinned to its disjoint CPUs.

Workers live across jobs; a dead worker's job is retried. Executors are looked up by name in
:data:`EXECUTORS` (:func:`get_executor`); ``auto`` is ``ray`` when a cluster address is
given (or ``RAY_ADDRESS`` is set), else ``local``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raynn.data import ArrayDataset
from raynn.errors import RaynnError
from raynn.grid import Job
from raynn.scheduler.cores import check_cores_per_job, resolve_cores_per_job, usable_cpus
from raynn.scheduler.monitor import Progress, UtilizationSampler
from raynn.scheduler.queue import JobQueue
from raynn.scheduler.topology import NodeCores, flat_cores, read_topology
from raynn.scheduler.workers import CoreGroupWorker
from raynn.spec import SchedulingSpec

# Ray starts its worker processes at nice 15, below its own daemons and every other process,
# so any wakeup on a training core preempts the training at once. raynn's workers own their
# cores: the Ray it starts runs them at the default priority, as plain processes run. (On a
# cluster started with `ray start`, set RAY_worker_niceness=0 there; cluster/ does.)
LOCAL_RAY_SYSTEM_CONFIG: dict[str, Any] = {"worker_niceness": 0}


@dataclass
class Execution:
    """What an executor did: recorded in ``run.json``."""

    executor: str
    workers: int
    cores_per_job: int
    nodes: dict[str, list[int]] = field(default_factory=dict)
    worker_restarts: int = 0
    cores_by_model: dict[str, int] = field(default_factory=dict)  # ``auto``'s choice


Chooser = Callable[[list[int]], dict[str, int]]


class Executor(ABC):
    """Runs a list of jobs and writes each result through a collector.

    Attributes:
        cores_by_model: per-model cores per job that ``prepare`` chose for
            ``cores_per_job: auto`` (empty: every job runs on one group of the returned size).
    """

    name: str = ""
    cores_by_model: dict[str, int]

    def stage(self, data: ArrayDataset) -> None:  # noqa: B027 - optional hook
        """Receive the dataset as soon as it is loaded (before jobs are planned or probed)."""

    @abstractmethod
    def prepare(self, n_jobs: int, cores_per_job: int | str, choose: Chooser | None = None) -> int:
        """Connect to compute and check the core setting; returns the workers' group size.

        With ``cores_per_job == "auto"`` and ``choose`` given (the probe's choice),
        ``choose(cores of each node)`` picks each model's cores per job into
        :attr:`cores_by_model`, and the groups are the smallest of those; otherwise the
        contract's default rule picks one size for every job.
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


class SerialExecutor(Executor):
    """One job at a time in this process, with all cores (or ``threads``) given to torch."""

    name = "serial"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self.cores_by_model = {}

    def prepare(self, n_jobs, cores_per_job, choose=None):
        self.threads = self.threads or len(usable_cpus())
        return self.threads

    def execute(self, jobs, data, run_dir, *, scheduling, progress):
        from raynn.results import ResultsCollector

        queue = JobQueue(jobs, max_attempts=scheduling.max_attempts)
        collector = ResultsCollector(run_dir)
        node = socket.gethostname()
        sampler = UtilizationSampler(node, scheduling.sample_interval, own_tree=os.getpid())
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
            while thread.is_alive():
                progress.update(queue.stats())
                thread.join(0.5)
        finally:
            collector.write_utilization(node, sampler.stop())
        progress.close(queue.stats())
        if error:
            raise error[0]
        return Execution(self.name, 1, worker.threads, {node: usable_cpus()})


@dataclass
class Node:
    """A machine (or a raylet's share of one) as the executors see it."""

    node_id: str
    name: str
    cpus: list[int]
    host: str = ""
    cores: NodeCores | None = None  # its scheduling units; default: one per CPU

    def __post_init__(self) -> None:
        if self.cores is None:
            self.cores = flat_cores(self.cpus)

    def domain(self, index: int) -> str:
        """The queue's name for NUMA node ``index`` of this node (the node's own if only one)."""
        return self.name if len(self.cores.domains) == 1 else f"{self.name}#numa{index}"

    def groups(self, size: int) -> list[Group]:
        """``(domain, unit ids, cpus)`` of each core group of ``size`` units."""
        domain_of, unit_cpus = self.cores.domain_of(), self.cores.unit_cpus()
        return [
            (self.domain(domain_of[g[0]]), g, sorted(c for u in g for c in unit_cpus[u]))
            for g in self.cores.groups(size)
        ]


Group = tuple[str, tuple[int, ...], list[int]]  # (queue domain, unit ids, cpus)
Slot = tuple[Node, Group]


def choose_group_size(
    cores_per_job: int | str, n_jobs: int, node_sizes: Sequence[int], choose: Chooser | None
) -> tuple[int, dict[str, int]]:
    """The workers' group size and, for ``auto`` with the probe, each model's cores per job.

    ``node_sizes``: the cores of every NUMA node of every node (a group never spans two).
    """
    if cores_per_job != "auto":
        check_cores_per_job(int(cores_per_job), node_sizes)
    if cores_per_job == "auto" and choose is not None:
        by_model = choose(list(node_sizes))
        size = min(by_model.values(), default=1)
    else:
        by_model = {}
        size = resolve_cores_per_job(cores_per_job, n_jobs, sum(node_sizes))
    return min(size, max(node_sizes)), by_model


class RayExecutor(Executor):
    """Pinned, long-lived worker actors pulling from a central queue actor.

    Args:
        address: a Ray cluster address (``auto``, ``ray://...``, ``host:port``); None starts an
            embedded local Ray, unless ``RAY_ADDRESS`` is set (as under ``ray job submit``).
        num_cpus: CPUs of the embedded local Ray (default: this process's affinity).
        max_workers: cap on worker actors (default: one per core group).
        smt: ``together`` or ``idle`` (:mod:`raynn.scheduler.topology`).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        max_workers: int | None = None,
        smt: str = "together",
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.max_workers = max_workers
        self.smt = smt
        self._owns_ray = False
        self._nodes: list[Node] = []
        self._cores_per_job = 1
        self.cores_by_model = {}

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
                    _system_config=LOCAL_RAY_SYSTEM_CONFIG,
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

    def probe_nodes(self, known: Sequence[Node] = ()) -> list[Node]:
        """Alive nodes with CPUs that are not in ``known``, each with the CPUs it may use.

        A small task on each node reads ``os.sched_getaffinity(0)`` and the CPU topology
        there; the node's Ray CPU count caps it. Several raylets on one host (a test cluster)
        get disjoint CPUs while they fit. Blocks (up to 120 s); a running run probes joiners
        with :meth:`start_probes` and :meth:`nodes_from` instead, without waiting.
        """
        import ray

        probes = self.start_probes({n.node_id for n in known})
        infos = ray.get([ref for _, ref in probes], timeout=120)
        pairs = [(n, info) for (n, _), info in zip(probes, infos, strict=True)]
        return self.nodes_from(known, pairs)

    def start_probes(self, exclude: set[str]) -> list[tuple[dict[str, Any], Any]]:
        """Start the probe task on every alive node with CPUs not in ``exclude``: pairs of
        the node's entry in ``ray.nodes()`` and the task's ref (head node first)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        smt = self.smt

        @ray.remote(num_cpus=0, max_retries=0)
        def node_info() -> tuple[str, list[int], Any]:
            cpus = sorted(os.sched_getaffinity(0))
            return socket.gethostname(), cpus, read_topology(cpus, smt)

        alive = [
            n
            for n in ray.nodes()
            if n["Alive"] and n["Resources"].get("CPU", 0) >= 1 and n["NodeID"] not in exclude
        ]
        alive.sort(key=lambda n: (not n.get("IsHeadNode", False), n["NodeID"]))
        return [
            (
                n,
                node_info.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                ).remote(),
            )
            for n in alive
        ]

    def nodes_from(
        self, known: Sequence[Node], probed: Sequence[tuple[dict[str, Any], Any]]
    ) -> list[Node]:
        """Nodes from finished probes (``(ray.nodes() entry, probe result)``), their CPUs
        kept disjoint from ``known`` nodes on the same host."""
        hosts = [n.host for n in known] + [info[0] for _, info in probed]
        used: dict[str, int] = {}
        for n in known:
            used[n.host] = used.get(n.host, 0) + len(n.cores.units)
        nodes = []
        for n, (host, _, cores) in probed:
            units = cores.units
            count = min(int(n["Resources"]["CPU"]) // cores.width or 1, len(units))
            offset = used.get(host, 0)
            if offset + count > len(units):
                offset = 0
            used[host] = offset + count
            mine = [c for u in units[offset : offset + count] for c in u]
            name = host if hosts.count(host) == 1 else f"{host}:{n['NodeID'][:6]}"
            nodes.append(Node(n["NodeID"], name, mine, host, _subset(cores, mine)))
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
            host = socket.gethostname()
            cpus = usable_cpus(self.num_cpus)
            self._nodes = [Node(node_id, host, cpus, host, read_topology(cpus, self.smt))]
        else:
            self._nodes = self.probe_nodes()
        sizes = [len(d) for n in self._nodes for d in n.cores.domains]
        self._cores_per_job, self.cores_by_model = choose_group_size(
            cores_per_job, n_jobs, sizes, choose
        )
        return self._cores_per_job

    def close(self) -> None:
        import ray

        if self._owns_ray and ray.is_initialized():
            fast_shutdown()
        self._owns_ray = False

    # -- execution ----------------------------------------------------------------------------
    def slots(self, nodes: Sequence[Node]) -> list[Slot]:
        """(node, core group) pairs of ``nodes``, round-robin over the nodes."""
        per_node = [[(n, g) for g in n.groups(self._cores_per_job)] for n in nodes]
        slots = []
        for i in range(max((len(p) for p in per_node), default=0)):
            slots.extend(p[i] for p in per_node if i < len(p))
        return slots

    def execute(self, jobs, data, run_dir, *, scheduling, progress):
        from raynn.scheduler.ray_run import RayRun

        run = RayRun(self, list(self._nodes), jobs, data, run_dir, scheduling, progress)
        self.current = run  # exposed for monitoring and fault-injection tests
        return run.run()


def _subset(cores: NodeCores, cpus: Sequence[int]) -> NodeCores:
    """``cores`` restricted to the units whose CPUs are all in ``cpus``."""
    keep = set(cpus)
    domains = tuple(tuple(u for u in d if set(u) <= keep) for d in cores.domains)
    return NodeCores(tuple(d for d in domains if d))


def fast_shutdown() -> None:
    """``ray.shutdown()`` of a Ray this process started, without its graceful waits.

    A graceful shutdown waits for every Ray process to exit on SIGTERM (about 1 s here);
    nothing of a finished run lives in them, so they are killed at once, and so are the
    agents a killed raylet leaves behind.
    """
    import psutil
    import ray
    import ray._private.worker as ray_worker

    node = ray_worker._global_node
    procs: list[psutil.Process] = []
    if node is not None:
        for infos in list(node.all_processes.values()):
            for info in infos:
                try:
                    proc = psutil.Process(info.process.pid)
                    procs += [proc, *proc.children(recursive=True)]
                except psutil.Error:
                    pass
        graceful = node.kill_all_processes
        node.kill_all_processes = lambda **kw: graceful(**{**kw, "allow_graceful": False})
    ray.shutdown()
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass


def alive_node_ids(with_cpu: bool = False) -> set[str]:
    """Ids of the Ray nodes alive now (``with_cpu``: only those with a CPU to run workers)."""
    import ray

    return {
        n["NodeID"]
        for n in ray.nodes()
        if n["Alive"] and (not with_cpu or n["Resources"].get("CPU", 0) >= 1)
    }


def _local(**kwargs: Any) -> Executor:
    from raynn.scheduler.local import LocalExecutor

    return LocalExecutor(**kwargs)


EXECUTORS: dict[str, Callable[..., Executor]] = {
    "serial": SerialExecutor,
    "local": _local,
    "ray": RayExecutor,
}


def auto_executor(address: str | None = None) -> str:
    """``ray`` when a cluster is named (``address`` or ``RAY_ADDRESS``), else ``local``."""
    return "ray" if address or os.environ.get("RAY_ADDRESS") else "local"


def get_executor(name: str, **kwargs: Any) -> Executor:
    """An executor by name (``auto``: :func:`auto_executor`); unknown names list the valid ones.

    Options left None are not passed on (``address=None`` means nothing to ``local``).
    """
    if name == "auto":
        name = auto_executor(kwargs.get("address"))
    try:
        factory = EXECUTORS[name]
    except KeyError:
        valid = ", ".join(["auto", *EXECUTORS])
        raise RaynnError(f"unknown executor {name!r}; valid: {valid}") from None
    options = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return factory(**options)
    except TypeError as exc:
        raise RaynnError(f"executor {name!r} cannot take {sorted(options)}: {exc}") from None
