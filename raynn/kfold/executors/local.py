"""The local executor: this machine's cores, one forked worker process per core group.

``raynn run`` without a cluster runs here. The driver holds the queue, the results collector
and a utilisation sampler as plain objects; each worker is a process forked from a zygote
that holds torch and the dataset (:mod:`raynn.placement.processes`), so it starts in
milliseconds instead of importing torch, pins every one of its threads to its core group,
and runs the same :class:`~raynn.kfold.workers.CoreGroupWorker` loop as the other
executors, with the queue and the collector reached over its pipe.

The workers are a :class:`~raynn.placement.group.WorkerGroup` of forked processes
(:class:`~raynn.placement.backends.ForkBackend`): the group watches them, and the driver
answers the workers' calls as they come. A lease that has to wait for cores is answered when
cores free up (no polling); a worker whose pipe closes without having been told to retire
died: its lease goes back to the queue (the retry resumes from its checkpoint) and a new
worker starts on the same cores, as the restart policy decides. Checkpoints are files the
workers write and read themselves; job rows are written by the driver.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection

from raynn.core.data import ArrayDataset
from raynn.errors import RaynnError
from raynn.kfold.executors.base import (
    Chooser,
    Execution,
    Executor,
    choose_group_size,
    register_executor,
)
from raynn.kfold.executors.supervision import jobs_lost, stuck_workers
from raynn.kfold.grid import Job
from raynn.kfold.handover import Handover
from raynn.kfold.messages import Retire, Wait
from raynn.kfold.racing import Race
from raynn.kfold.workers import CoreGroupWorker, WorkerContext
from raynn.placement.backends import ForkBackend, ForkedMember
from raynn.placement.cores import usable_cpus
from raynn.placement.group import WorkerGroup
from raynn.placement.monitor import NodeSamplers
from raynn.placement.nodes import Node, NodeGroup
from raynn.placement.processes import ZYGOTE_PRELOAD, PipeProxy, Zygote, send
from raynn.placement.progress import Progress
from raynn.placement.restarts import RestartPolicy
from raynn.placement.topology import read_topology
from raynn.runs.files import CheckpointDir
from raynn.spec import SchedulingSpec


def worker_main(
    conn: Connection,
    data: ArrayDataset,
    worker_id: str,
    units: Sequence[int],
    node: str,
    domain: str,
    unit_cpus: Mapping[int, Sequence[int]],
    run_dir: str,
) -> None:
    """A forked worker: the worker loop with the driver's queue and collector over ``conn``.

    A :class:`~raynn.errors.RaynnError` that is not the job's own (an unwritable checkpoint
    directory) is sent to the driver, which stops the run with it.
    """
    lock = threading.Lock()
    try:
        context = WorkerContext(
            worker_id,
            PipeProxy(conn, "queue", lock),
            PipeProxy(conn, "collector", lock),
            cores=units,
            node=node,
            domain=domain,
            unit_cpus=unit_cpus,
            checkpoints=CheckpointDir(run_dir),
            handover=PipeProxy(conn, "run", lock),  # the result and the next lease: one message
        )
        worker = CoreGroupWorker(context, data)
        worker.run()
    except RaynnError as exc:
        with lock:
            send(conn, ("driver", "fail", (exc,)))


class LocalExecutor(Executor):
    """This machine's cores, one forked, pinned worker process per core group.

    Args:
        num_cpus: CPUs to use (default: this process's affinity).
        max_workers: cap on worker processes (default: one per core group).
        smt: ``together`` or ``idle`` (:mod:`raynn.placement.topology`).
        zygote: a zygote started earlier (the CLI starts one before importing torch);
            default: one is started now.
    """

    name = "local"

    def __init__(
        self,
        num_cpus: int | None = None,
        max_workers: int | None = None,
        smt: str = "together",
        zygote: Zygote | None = None,
    ) -> None:
        self.max_workers = max_workers
        self.zygote = zygote or Zygote(ZYGOTE_PRELOAD)
        host = socket.gethostname()
        cpus = usable_cpus(num_cpus)
        self.node = Node("local", host, cpus, host, read_topology(cpus, smt))
        self.cores_by_model = {}
        self.group_size = 1  # cores of each worker's group, set by size_groups
        self._staged = False

    def stage(self, data: ArrayDataset) -> None:
        if not self._staged:
            self.zygote.load(data)
            self._staged = True

    def size_groups(
        self, n_jobs: int, cores_per_job: int | str, choose: Chooser | None = None
    ) -> int:
        sizes = self.domain_sizes = [len(d) for d in self.node.cores.domains]
        self.group_size, self.cores_by_model = choose_group_size(
            cores_per_job, n_jobs, sizes, choose
        )
        return self.group_size

    def execute(
        self,
        jobs: list[Job],
        data: ArrayDataset,
        run_dir: str,
        *,
        scheduling: SchedulingSpec,
        progress: Progress,
        race: Race | None = None,
    ) -> Execution:
        self.stage(data)
        run = LocalRun(self, jobs, run_dir, scheduling, progress, race)
        self.current = run  # exposed for monitoring and fault-injection tests
        return run.run()

    def close(self) -> None:
        self.zygote.close()


class LocalRun:
    """One execution of a job list by forked workers; see the module docstring."""

    def __init__(
        self,
        executor: LocalExecutor,
        jobs: list[Job],
        run_dir: str,
        scheduling: SchedulingSpec,
        progress: Progress,
        race: Race | None = None,
    ) -> None:
        from raynn.kfold.collector import ResultsCollector
        from raynn.kfold.queue import JobQueue

        self.executor = executor
        self.node = executor.node
        self.jobs = jobs
        self.run_dir = run_dir
        self.scheduling = scheduling
        self.progress = progress
        self.queue = JobQueue(
            jobs, scheduling.max_attempts, scheduling.tail_widening, scheduling.lease_timeout, race
        )
        self.collector = ResultsCollector(run_dir)
        self.handover = Handover(self.queue, self.collector)
        self.waiting: dict[Connection, str] = {}  # leases to answer once cores free up
        self.group = WorkerGroup(
            ForkBackend(self._fork),
            RestartPolicy.for_jobs(len(jobs), scheduling.max_attempts),
            # raynn's own processes: the driver's tree (the zygote and the workers it forks)
            samplers=NodeSamplers(scheduling.sample_interval, own_tree=os.getpid()),
            on_lost=self._lost,
            on_message=lambda proc, request: self._answer(proc, *request),
            stuck=lambda: stuck_workers(self.queue),
        )

    @property
    def workers(self) -> dict[Connection, ForkedMember]:
        """The live workers by the driver's end of their pipe."""
        return {m.conn: m for m in list(self.group.members.values())}

    def _fork(self, worker_id: str, slot: NodeGroup) -> tuple[int, Connection]:
        node, (domain, units, _) = slot
        return self.executor.zygote.fork(
            "raynn.kfold.executors.local:worker_main",
            worker_id,
            units,
            node.name,
            domain,
            node.cores.unit_cpus(),
            self.run_dir,
        )

    def kill(self, worker_id: str) -> None:
        """Kill a worker process (a stuck one, or in fault-injection tests)."""
        self.group.kill(worker_id)

    def _answer(self, proc: ForkedMember, target: str, method: str, args: tuple) -> None:
        if target == "driver":  # the worker hit an error that is not its job's: stop
            raise args[0]
        obj = {"queue": self.queue, "collector": self.collector, "run": self.handover}[target]
        value = getattr(obj, method)(*args)  # an OutputError stops the run (exit 2)
        if (target, method) in (("queue", "lease"), ("run", "hand_over")):
            if isinstance(value, Wait):  # wait for cores: answered in _retry_waiting
                self.waiting[proc.conn] = args[0]
                return
            proc.retired = isinstance(value, Retire)
        send(proc.conn, value)
        if method in ("complete", "lease", "hand_over") and self.waiting:
            self._retry_waiting()

    def _retry_waiting(self) -> None:
        for conn, worker_id in list(self.waiting.items()):
            value = self.queue.lease(worker_id)
            if isinstance(value, Wait):
                continue
            del self.waiting[conn]
            proc = self.workers.get(conn)
            if proc is not None:
                proc.retired = isinstance(value, Retire)
                send(conn, value)

    def _lost(self, proc: ForkedMember) -> bool:
        """A worker died: its jobs go back to the queue (or fail), and the leases that
        waited for cores may fit now. Returns whether jobs are pending."""
        self.waiting.pop(proc.conn, None)
        pending = jobs_lost(self.queue, self.collector, proc.worker_id)
        if self.waiting:
            self._retry_waiting()
        return pending

    def run(self) -> Execution:
        """Start the workers and serve them until every one has retired."""
        slots = [(self.node, g) for g in self.node.groups(self.executor.group_size)]
        cap = min(len(self.jobs), self.executor.max_workers or len(self.jobs))
        self.group.sample([self.node])
        try:
            self.group.start(slots[:cap])  # together: forked workers are up at once
            next_view = 0.0
            while self.group.members:
                self.group.poll(0.5)
                if time.monotonic() >= next_view:
                    self.progress.update(self.queue.stats())
                    self.group.kill_stuck()
                    next_view = time.monotonic() + 0.5
            stats = self.queue.stats()
            self.progress.close(stats)
            if stats.pending:  # every worker retired: what is left fits no group here
                raise RaynnError(
                    f"{stats.pending} job(s) need more cores than this machine's core groups "
                    "have; lower scheduling.cores_per_job"
                )
        finally:
            for name, rows in self.group.drain().items():
                self.collector.write_utilization(name, rows or [])
            self.collector.close()
        return Execution(
            "local",
            self.group.started,
            self.executor.group_size,
            {self.node.name: self.node.cpus},
            self.group.restarts,
            dict(self.executor.cores_by_model),
        )


register_executor("local", LocalExecutor)
