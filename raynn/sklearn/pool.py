"""The worker pool behind the ``raynn`` joblib backend: pinned actors, a queue, one loop.

* Ray: the cluster at ``address``, or an embedded local Ray started by raynn's one connector
  (:func:`raynn.placement.session.connect`), stopped again at :meth:`WorkerPool.shutdown`
  only if the pool started it;
* one :class:`~raynn.sklearn.worker.TaskWorker` actor per core group of ``cores_per_task``
  cores on every node (:func:`raynn.placement.nodes.node_groups`), pinned there, kept
  across tasks (and, under :func:`raynn.sklearn.backend.parallel_backend`, across the
  Parallel calls of its context): a
  :class:`~raynn.placement.group.WorkerGroup` of Ray actors, started together;
* a :class:`~raynn.sklearn.tasks.TaskQueue` of the submitted batches, and a thread that
  leases them to idle workers, collects results and completes the joblib futures;
* a :class:`~raynn.placement.monitor.UtilizationSampler` on the driver's node.

A worker that dies mid-task (killed, out of memory, its node gone) fails its actor call with
``RayActorError``: its task goes back to the front of the queue, the group starts a fresh
worker on the same core group (on a live node's, if its node is gone), and after
``max_attempts`` lost attempts the task's future raises
:class:`~raynn.sklearn.tasks.TaskLostError`, which the joblib call raises.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from functools import partial
from typing import Any

from raynn.placement import nodes as nodes_mod
from raynn.placement import session
from raynn.placement.backends import RayActorBackend
from raynn.placement.cores import usable_cpus
from raynn.placement.group import Member, WorkerGroup
from raynn.placement.monitor import NodeSamplers
from raynn.placement.nodes import Node, NodeGroup
from raynn.placement.restarts import RestartPolicy
from raynn.sklearn.tasks import BackendOptionError, RunSummary, TaskLostError, TaskQueue, TaskRecord
from raynn.sklearn.worker import TaskWorker, record_from, with_remote_traceback

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # how long the loop waits on running tasks before leasing again
READY_TIMEOUT = 300.0  # seconds the workers are given to start


def local_slot_count(cores_per_task: int, num_cpus: int | None = None) -> int:
    """Core groups an embedded Ray on this machine would give (without starting it)."""
    return len(nodes_mod.local_node(num_cpus=num_cpus).groups(cores_per_task))


class WorkerPool:
    """Pinned worker actors and the loop that feeds them; see the module docstring.

    Args:
        cores_per_task: cores of each worker's core group (its thread cap).
        address: a Ray cluster address; None starts an embedded Ray (or joins
            ``RAY_ADDRESS``), as :func:`raynn.placement.session.connect` does.
        num_cpus: CPUs of an embedded Ray (default: this process's affinity).
        max_attempts: attempts a task gets when its worker dies.
        sample_interval: seconds between utilisation samples.
    """

    def __init__(
        self,
        cores_per_task: int,
        address: str | None = None,
        num_cpus: int | None = None,
        max_attempts: int = 3,
        sample_interval: float = 0.5,
    ) -> None:
        self.cores_per_task = cores_per_task
        self.address = address
        self.num_cpus = num_cpus
        self.queue = TaskQueue(max_attempts)
        self.summary = RunSummary(cores_per_task)
        self.sample_interval = sample_interval
        self.slots: list[NodeGroup] = []
        self.limit = 0  # most tasks running at once (0: one per worker)
        self.group: WorkerGroup | None = None  # the workers, once started
        self._idle: list[str] = []
        self._inflight: dict[Any, tuple[Any, str]] = {}  # ref -> (task, worker id)
        self._futures: dict[int, Future] = {}
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Join or start Ray, start and pin one worker per core group, start the loop."""
        import ray

        begin = time.time()
        embedded = session.will_embed(self.address)
        if embedded and local_slot_count(self.cores_per_task, self.num_cpus) == 0:
            raise BackendOptionError(
                _too_many(self.cores_per_task, len(usable_cpus(self.num_cpus)))
            )
        self.summary.started_ray = session.connect(self.address, self.num_cpus)
        try:
            nodes = nodes_mod.session_nodes(embedded, self.num_cpus)
            self.slots = nodes_mod.node_groups(nodes, self.cores_per_task)
            if not self.slots:
                raise BackendOptionError(
                    _too_many(self.cores_per_task, max((len(n.cpus) for n in nodes), default=0))
                )
            worker_cls = ray.remote(max_restarts=0)(TaskWorker)
            self.group = WorkerGroup(
                RayActorBackend(partial(_create, worker_cls), ready="ready", pid="ready"),
                RestartPolicy.unbounded(self.queue.max_attempts),
                samplers=NodeSamplers(self.sample_interval, only=[_driver_node(nodes)]),
                on_start=self._started,
            )
            self.group.start(self.slots, timeout=READY_TIMEOUT, strict=True)
        except BaseException:
            self.shutdown()
            raise
        self.group.sample(nodes)  # the driver's node, from the workers' start on
        self.group.watch()  # their pids, answered by ready()
        self.summary.slots = len(self.slots)
        self.summary.startup_seconds = time.time() - begin
        self._thread = threading.Thread(target=self._loop, name="raynn-joblib", daemon=True)
        self._thread.start()

    def _started(self, member: Member) -> None:
        """A worker started (a replacement too): idle until a task is leased to it."""
        self.summary.workers += 1
        self._idle.append(member.worker_id)

    # -- tasks ---------------------------------------------------------------------------------
    def submit(self, func: Any) -> Future:
        """Queue ``func`` (a joblib batch); its future completes when a worker has run it."""
        import ray

        future: Future = Future()
        ref = ray.put(func)
        with self._lock:  # the loop may finish the task before this returns
            task = self.queue.add(ref)
            self._futures[task.task_id] = future
        self._wake.set()
        return future

    def cancel_pending(self) -> None:
        """Drop the tasks not yet leased (joblib aborts its call); running ones finish."""
        with self._lock:
            for task in self.queue.cancel_pending():
                self._futures.pop(task.task_id, None)

    def _loop(self) -> None:
        import ray

        while not self._stop.is_set():
            try:
                self.group.watch()  # replacements' pids, as they answer
                self._assign()
                if not self._inflight:
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                ready, _ = ray.wait(list(self._inflight), num_returns=1, timeout=POLL_SECONDS)
                for ref in ready:
                    self._finish(ref)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad step
                if not self._stop.is_set():
                    log.exception("raynn joblib backend: dispatch loop error")

    def _assign(self) -> None:
        while self._idle and not self._stop.is_set():
            if self.limit and len(self._inflight) >= self.limit:
                return
            worker_id = self._idle[0]
            member = self.group.members.get(worker_id)
            if member is None:  # gone meanwhile (the pool is shutting down)
                self._idle.pop(0)
                continue
            task = self.queue.lease(worker_id)
            if task is None:
                return
            self._idle.pop(0)
            self._inflight[member.actor.run.remote(task.task_id, task.attempts, task.func)] = (
                task,
                worker_id,
            )

    def _finish(self, ref: Any) -> None:
        import ray
        from ray.exceptions import RayActorError, RayError

        task, worker_id = self._inflight.pop(ref)
        try:
            ok, value, row, text = ray.get(ref)
        except RayActorError as exc:
            self._lost(task, worker_id, exc)
            return
        except RayError as exc:  # the result could not be fetched or unpickled
            ok, value, text = False, exc, ""
            member = self.group.members.get(worker_id)
            node = member.slot[0].name if member is not None else ""
            row = TaskRecord(task.task_id, task.attempts, worker_id, "error", node)
            row.error = f"{type(exc).__name__}: {exc}"
            row = row.to_dict()
        record = record_from(row)
        self.summary.records.append(record)
        self._idle.append(worker_id)
        self.queue.complete(task.task_id, ok, record.error)
        with self._lock:
            future = self._futures.pop(task.task_id, None)
        if future is None:  # cancelled meanwhile
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(with_remote_traceback(value, text))

    def _lost(self, task: Any, worker_id: str, exc: BaseException) -> None:
        """``worker_id`` died running ``task``: retry it on a fresh worker, or fail it."""
        node, (_, _, cpus) = self.group.members[worker_id].slot
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        self.summary.records.append(
            TaskRecord(
                task.task_id,
                task.attempts,
                worker_id,
                "worker_lost",
                node.name,
                cpus=list(cpus),
                end=time.time(),
                error=first_line[:300],
            )
        )
        exhausted = self.queue.release_worker(worker_id)
        log.warning(
            "raynn joblib backend: worker %s on %s died running task %d (attempt %d)%s",
            worker_id,
            node.name,
            task.task_id,
            task.attempts,
            "" if exhausted else "; retrying it on a fresh worker",
        )
        # the group replaces it (on a live node) while the pool is open
        self.group.lost(worker_id, first_line, work_left=not self._stop.is_set())
        for lost in exhausted:
            with self._lock:
                future = self._futures.pop(lost.task_id, None)
            if future is not None:
                future.set_exception(
                    TaskLostError(
                        f"joblib task {lost.task_id}: its worker died on each of its "
                        f"{lost.attempts} attempts (last: {worker_id} on {node.name}); the "
                        "task may be killing its process (os._exit, a crash, out of memory): "
                        "run it with n_jobs=1 to see why, or raise the backend's max_attempts"
                    )
                )

    # -- stop ----------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the loop, kill the workers (no replacement starts from then on), stop the
        sampler, stop Ray if the pool started it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        group, self.group = self.group, None
        if group is not None:
            sampled = group.drain().values()
            self.summary.utilization = [row for rows in sampled for row in rows or ()]
        self._idle.clear()
        self._inflight.clear()
        session.shutdown_if_started(self.summary.started_ray)


def _create(worker_cls: Any, worker_id: str, slot: NodeGroup) -> Any:
    """A :class:`~raynn.sklearn.worker.TaskWorker` actor on ``slot``."""
    node, (_, _, cpus) = slot
    # no runtime_env: the actor may take a process Ray has already started; it pins every
    # thread and caps every pool itself (raynn.placement.cores.pin_current_process)
    placed = worker_cls.options(num_cpus=len(cpus), **nodes_mod.on_node(node.node_id))
    return placed.remote(worker_id, cpus, node.name)


def _driver_node(nodes: list[Node]) -> str:
    import socket

    host = socket.gethostname()
    return next((n.name for n in nodes if n.host == host), host)


def _too_many(cores: int, largest: int) -> str:
    return (
        f"joblib backend 'raynn': cores_per_task={cores} is more than the largest node has "
        f"({largest} CPUs); use at most {largest}"
    )
