"""One execution of a job list on a Ray cluster: the actors, the worker group and its loop.

* a JobQueue actor and a ResultsCollector actor on the driver's node;
* a UtilizationSampler actor on every node but the driver's (sampled in the driver);
* one CoreGroupWorker actor per (node, core group) slot, pinned to its CPUs; workers live
  across jobs and retire when the queue is empty.

The workers are a :class:`~raynn.placement.group.WorkerGroup` of Ray actors
(:class:`~raynn.placement.backends.RayActorBackend`), started together. A worker that dies
(killed, or its node gone) has its job re-queued (the retry resumes from the job's
checkpoint) and, while jobs are pending, a replacement starts on the same slot, or on a free
slot of a live node if that node is gone, as the restart policy decides. Every few seconds
the loop looks for nodes that joined (:class:`~raynn.placement.joiners.Joiners`) and gives
them workers too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from raynn.errors import RaynnError
from raynn.kfold.collector import ResultsCollector
from raynn.kfold.executors.base import Execution
from raynn.kfold.executors.supervision import jobs_lost, stuck_workers
from raynn.kfold.queue import JobQueue
from raynn.kfold.workers import CoreGroupWorker, WorkerContext
from raynn.placement.backends import ActorMember, RayActorBackend
from raynn.placement.group import Member, WorkerGroup
from raynn.placement.joiners import Joiners, Prober
from raynn.placement.monitor import ActorSamplers
from raynn.placement.nodes import Node, NodeGroup, node_groups, on_node
from raynn.placement.progress import Progress
from raynn.placement.restarts import RestartPolicy
from raynn.placement.session import remote_cause

if TYPE_CHECKING:
    from raynn.core.data import ArrayDataset
    from raynn.kfold.grid import Job
    from raynn.kfold.racing import Race
    from raynn.spec import SchedulingSpec

NODE_POLL_SECONDS = 2.0
STRANDED = (
    "every node that could run the remaining jobs is gone; add nodes and finish "
    "with 'raynn run --resume RUN_DIR'"
)


class RayRun:
    """Runs ``jobs`` on the nodes an executor sized its groups on; see the module docstring.

    Args:
        nodes: the nodes probed before the run (joiners are added as they come).
        group_size: units of each worker's core group.
        cores_by_model: ``cores_per_job: auto``'s choice per model (recorded).
        max_workers: cap on worker actors started at once (default: one per job).
        start_probes: starts the probes of nodes not in the given ids
            (:func:`raynn.placement.nodes.start_probes`).
        race: fold racing's state (``scheduling.racing``), run by the queue actor.
    """

    def __init__(
        self,
        nodes: list[Node],
        jobs: list[Job],
        data: ArrayDataset,
        run_dir: str,
        scheduling: SchedulingSpec,
        progress: Progress,
        *,
        group_size: int,
        cores_by_model: dict[str, int],
        max_workers: int | None,
        start_probes: Prober,
        race: Race | None = None,
    ) -> None:
        import ray

        self.nodes = nodes
        self.group_size = group_size
        self.cores_by_model = cores_by_model
        self.max_workers = max_workers
        self.jobs = jobs
        self.progress = progress
        driver = ray.get_runtime_context().get_node_id()
        self.queue = (
            ray.remote(num_cpus=0)(JobQueue)
            .options(**on_node(driver))
            .remote(
                jobs,
                scheduling.max_attempts,
                scheduling.tail_widening,
                scheduling.lease_timeout,
                race,
            )
        )
        self.run_dir = run_dir
        self.collector = (
            ray.remote(num_cpus=0)(ResultsCollector).options(**on_node(driver)).remote(run_dir)
        )
        self.data_ref = ray.put(data)
        self.worker_cls = ray.remote(num_cpus=1, max_restarts=0)(CoreGroupWorker)
        self.joiners = Joiners(start_probes)
        self.group = WorkerGroup(
            RayActorBackend(self._create, run=_run),
            RestartPolicy.for_jobs(len(jobs), scheduling.max_attempts, stranded=STRANDED),
            samplers=ActorSamplers(scheduling.sample_interval, here=driver),
            on_lost=self._lost,
            stuck=lambda: stuck_workers(self.queue),
        )

    # -- pieces --------------------------------------------------------------------------------
    def _create(self, worker_id: str, slot: NodeGroup) -> Any:
        """A worker actor on ``slot`` (the group's backend calls it)."""
        node, (domain, units, cpus) = slot
        # no runtime_env: the actor may take a worker process Ray has already started; it pins
        # every thread and caps every pool itself (raynn.placement.cores.pin_current_process)
        context = WorkerContext(
            worker_id,
            self.queue,
            self.collector,
            cores=units,
            node=node.name,
            domain=domain,
            unit_cpus=node.cores.unit_cpus(),
        )
        # the data apart: Ray resolves an object reference passed as an argument, not one
        # inside another object
        actor = self.worker_cls.options(num_cpus=len(cpus), **on_node(node.node_id)).remote(
            context, self.data_ref
        )
        return actor

    def _lost(self, member: Member) -> bool:
        return jobs_lost(self.queue, self.collector, member.worker_id)

    def _stats(self) -> Any:
        import ray

        return ray.get(self.queue.stats.remote())

    def _poll_new_nodes(self) -> None:
        """Take in the nodes that joined (probed without waiting), with workers at once: the
        others are already running."""
        if not self._stats().pending:
            return
        new = self.joiners.poll(self.nodes)
        if not new:
            return
        self.nodes.extend(new)
        self.group.sample(new)
        self.group.start(node_groups(new, self.group_size), together=False)

    # -- the loop ------------------------------------------------------------------------------
    def _drive(self) -> None:
        """Serve the workers until every one has retired."""
        next_poll = time.monotonic() + NODE_POLL_SECONDS
        while self.group.members:
            self.group.poll(0.5)
            if time.monotonic() >= next_poll:
                self._poll_new_nodes()
                self.group.kill_stuck()
                next_poll = time.monotonic() + NODE_POLL_SECONDS
            self.progress.update(self._stats())

    def _dead_control_actor(self) -> str | None:
        """The name of the run's queue or collector actor if it is dead, else None."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        for name, call in (
            ("JobQueue", self.queue.stats),
            ("ResultsCollector", self.collector.node),
        ):
            try:
                ray.get(call.remote(), timeout=30)
            except (RayActorError, GetTimeoutError):
                return name
        return None

    def run(self) -> Execution:
        """Start the workers together and drive them to the end of the queue."""
        self.group.sample(self.nodes)
        first = node_groups(self.nodes, self.group_size)
        cap = min(len(self.jobs), self.max_workers or len(self.jobs))
        self.group.idle = first[cap:]
        self.group.start(first[:cap])
        try:
            self._drive_to_the_end()
        except BaseException:
            self._shutdown(quiet=True)  # the error in flight is the one to report
            raise
        self._shutdown()
        return Execution(
            "ray",
            self.group.started,
            self.group_size,
            {n.name: n.cpus for n in self.nodes if n.node_id not in self.group.dead_nodes},
            self.group.restarts,
            dict(self.cores_by_model),
        )

    def _drive_to_the_end(self) -> None:
        """:meth:`_drive`; a dead queue or collector actor ends the run in one line, and jobs
        left pending when every worker has retired are an error."""
        from ray.exceptions import RayActorError, RayTaskError

        try:
            self._drive()
        except (RayActorError, RayTaskError) as exc:
            dead = self._dead_control_actor()
            if dead is None:
                raise
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise RaynnError(
                f"the run's {dead} actor died ({type(exc).__name__}: {reason}); the rows "
                f"written so far are kept: finish with 'raynn run --resume {self.run_dir}'"
            ) from None
        stats = self._stats()
        self.progress.close(stats)
        if stats.pending:  # every worker retired: what is left fits no node
            raise RaynnError(
                f"{stats.pending} job(s) need more cores than any node left has; add "
                "nodes, or finish them with 'raynn run --resume RUN_DIR' (cores_per_job: "
                "auto sizes them again for the nodes there are)"
            )

    def _shutdown(self, quiet: bool = False) -> None:
        """Stop every actor of the run, writing the utilisation samples first. An output
        error while writing them is raised (one line) unless ``quiet``: another error is
        already on its way."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        failed: BaseException | None = None
        calls = [  # a node that is gone (no rows) took its samples with it
            self.collector.write_utilization.remote(name, rows)
            for name, rows in self.group.drain().items()
            if rows is not None
        ]
        for ref in [*calls, self.collector.close.remote()]:  # the tables: one file each
            try:
                ray.get(ref)
            except (RayActorError, GetTimeoutError):
                pass  # the collector is gone: the error in flight says so
            except RayTaskError as exc:
                cause = remote_cause(exc)
                failed = failed or (cause if isinstance(cause, RaynnError) else exc)
        ray.kill(self.queue)
        ray.kill(self.collector)
        if failed is not None and not quiet:
            raise failed from None


def _run(member: ActorMember) -> Any:
    """Let a worker actor go: its loop, whose end is the worker's end."""
    return member.actor.run.remote()
