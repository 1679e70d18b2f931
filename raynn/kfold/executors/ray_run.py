"""One execution of a job list on a Ray cluster: the actors, the worker pool and its loop.

* a JobQueue actor and a ResultsCollector actor on the driver's node;
* a UtilizationSampler actor on every node;
* one CoreGroupWorker actor per (node, core group) slot, pinned to its CPUs; workers live
  across jobs and retire when the queue is empty.

The loop watches the workers. A worker that dies (killed, or its node gone) has its job
re-queued (the retry resumes from the job's checkpoint) and, while jobs are pending, a
replacement starts on the same slot, or on a free slot of a live node if that node is gone.
Every few seconds the loop looks for nodes that joined and gives them workers too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from raynn.errors import RaynnError
from raynn.kfold.collector import ResultsCollector
from raynn.kfold.executors.base import Execution
from raynn.kfold.queue import JobQueue
from raynn.kfold.rows import JobResult
from raynn.kfold.workers import CoreGroupWorker
from raynn.placement.monitor import UtilizationSampler
from raynn.placement.nodes import (
    Node,
    NodeGroup,
    alive_node_ids,
    node_groups,
    nodes_from,
    on_node,
)
from raynn.placement.progress import Progress
from raynn.placement.restarts import RestartPolicy
from raynn.placement.session import remote_cause

if TYPE_CHECKING:
    from raynn.core.data import ArrayDataset
    from raynn.kfold.grid import Job
    from raynn.kfold.racing import Race
    from raynn.spec import SchedulingSpec

log = logging.getLogger(__name__)

NODE_POLL_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 120.0  # a joiner's probe is given up on (and retried) after this


Prober = Callable[[set[str]], list[tuple[dict[str, Any], Any]]]


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
        self.start_probes = start_probes
        self.jobs = jobs
        self.scheduling = scheduling
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
        self.samplers: dict[str, Any] = {}
        self.data_ref = ray.put(data)
        self.worker_cls = ray.remote(num_cpus=1, max_restarts=0)(CoreGroupWorker)
        self.workers: dict[Any, tuple[str, Any, NodeGroup]] = {}  # run ref -> (id, actor, slot)
        self.pids: dict[str, Any] = {}  # worker id -> ref to its pid (answered before run)
        self.unwatched: dict[str, str] = {}  # worker id -> node, until its sampler knows it
        self.probing: dict[str, tuple[dict[str, Any], Any, float]] = {}  # joiners asked
        self.idle: list[NodeGroup] = []  # slots whose worker retired
        self.dead_nodes: set[str] = set()
        self.started = 0
        self.policy = RestartPolicy.for_jobs(len(jobs), scheduling.max_attempts)

    # -- pieces --------------------------------------------------------------------------------
    def _add_samplers(self, nodes: list[Node]) -> None:
        import ray

        for node in nodes:
            sampler = (
                ray.remote(num_cpus=0)(UtilizationSampler)
                .options(**on_node(node.node_id))
                .remote(node.name, self.scheduling.sample_interval, own_pids=[])
            )
            sampler.start.remote()
            self.samplers[node.name] = sampler

    def _create(self, slot: NodeGroup) -> tuple[str, Any, NodeGroup]:
        node, (domain, units, cpus) = slot
        worker_id = f"w{self.started}"
        self.started += 1
        # no runtime_env: the actor may take a worker process Ray has already started; it pins
        # every thread and caps every pool itself (raynn.placement.cores.pin_current_process)
        actor = self.worker_cls.options(num_cpus=len(cpus), **on_node(node.node_id)).remote(
            worker_id,
            units,
            self.data_ref,
            self.queue,
            self.collector,
            node.name,
            domain=domain,
            unit_cpus=node.cores.unit_cpus(),
        )
        self.pids[worker_id] = actor.pid.remote()
        self.unwatched[worker_id] = node.name
        return worker_id, actor, slot

    def _watch_ready(self) -> None:
        """Tell each node's sampler the pid of every worker there that has answered it: the
        processes whose CPU time is raynn's own in the utilisation table."""
        import ray

        if not self.unwatched:
            return
        refs = {self.pids[wid]: wid for wid in self.unwatched}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        for ref in ready:
            node = self.unwatched.pop(refs[ref])
            try:
                pid = ray.get(ref)
            except Exception:  # noqa: BLE001 - died before answering: nothing to watch
                continue
            if node in self.samplers:
                self.samplers[node].watch.remote(pid)

    def _launch(self, entry: tuple[str, Any, NodeGroup]) -> None:
        self.workers[entry[1].run.remote()] = entry

    def _start(self, slot: NodeGroup) -> None:
        self._launch(self._create(slot))

    def _start_together(self, slots: list[NodeGroup], timeout: float = 300.0) -> None:
        """Create workers, wait until all are up (pinned, torch imported), then let them go.

        Jobs then start within a fraction of a second of each other instead of as each process
        happens to finish importing torch; the wait is start-up overhead, reported as such.
        """
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        entries = [self._create(slot) for slot in slots]
        try:
            ray.get([actor.ready.remote() for _, actor, _ in entries], timeout=timeout)
        except (RayActorError, GetTimeoutError):
            pass  # a worker that died or hangs is handled by the loop like any other
        for entry in entries:
            self._launch(entry)

    def _kill_stuck(self) -> None:
        """Kill the workers whose lease expired; their deaths re-queue the jobs."""
        import ray

        by_id = {wid: actor for wid, actor, _ in self.workers.values()}
        for job_id, worker_id, idle in ray.get(self.queue.expired.remote()):
            if worker_id in by_id:
                log.warning(
                    "job %s: no progress for %.0f s; killing its worker %s, the job runs again",
                    job_id,
                    idle,
                    worker_id,
                )
                ray.kill(by_id.pop(worker_id))

    def _stats(self) -> Any:
        import ray

        return ray.get(self.queue.stats.remote())

    def _worker_died(self, worker_id: str, slot: NodeGroup) -> None:
        import ray

        exhausted = ray.get(self.queue.release_worker.remote(worker_id))
        for job, attempt in exhausted:
            failed = JobResult.failed(
                job, f"worker died on attempt {attempt} (max_attempts reached)", attempt
            )
            ray.get(self.collector.write_job.remote(failed))
        node = slot[0]
        if node.node_id not in alive_node_ids():
            self.dead_nodes.add(node.node_id)
        if not self.policy.may_replace(bool(self._stats().pending)):
            return
        if node.node_id not in self.dead_nodes:
            replacement: NodeGroup | None = slot
        else:
            live = [s for s in self.idle if s[0].node_id not in self.dead_nodes]
            replacement = live[0] if live else None
            if replacement is not None:
                self.idle.remove(replacement)
        if replacement is not None:
            self.policy.replace()
            self._start(replacement)
        elif not self.workers:
            raise RaynnError(
                "every node that could run the remaining jobs is gone; add nodes and finish "
                "with 'raynn run --resume RUN_DIR'"
            )

    def _poll_new_nodes(self) -> None:
        """Start probes of nodes that joined; take in those whose probe has answered.

        Never waits: a joiner whose probe fails is logged and probed again at the next poll,
        one whose probe has not answered within PROBE_TIMEOUT_SECONDS is given up on for now.
        """
        import ray

        if not self._stats().pending:
            return
        known = {n.node_id for n in self.nodes} | set(self.probing)
        for entry, ref in self.start_probes(known):
            self.probing[entry["NodeID"]] = (entry, ref, time.monotonic())
        answered = []
        for node_id, (entry, ref, since) in list(self.probing.items()):
            ready, _ = ray.wait([ref], timeout=0)
            if ready:
                del self.probing[node_id]
                try:
                    answered.append((entry, ray.get(ref)))
                except Exception as exc:  # noqa: BLE001 - a dying joiner must not end the run
                    log.warning("probing joined node %s failed (%s); will retry", node_id, exc)
            elif time.monotonic() - since > PROBE_TIMEOUT_SECONDS:
                del self.probing[node_id]
                ray.cancel(ref, force=True)
                log.warning("joined node %s did not answer its probe; will retry", node_id)
        new = nodes_from(self.nodes, answered)
        if not new:
            return
        self.nodes.extend(new)
        self._add_samplers(new)
        for slot in node_groups(new, self.group_size):
            self._start(slot)  # joiners start at once: the others are already running

    # -- the loop ------------------------------------------------------------------------------
    def _drive(self) -> None:
        """Serve the workers until every one has retired."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        next_poll = time.monotonic() + NODE_POLL_SECONDS
        while self.workers:
            self._watch_ready()
            ready, _ = ray.wait(list(self.workers), num_returns=1, timeout=0.5)
            for ref in ready:
                worker_id, actor, slot = self.workers.pop(ref)
                try:
                    ray.get(ref)
                except RayActorError:
                    self._worker_died(worker_id, slot)
                except RayTaskError as exc:
                    cause = remote_cause(exc)
                    raise (cause if isinstance(cause, RaynnError) else exc) from None
                else:
                    ray.kill(actor)
                    self.idle.append(slot)
            if time.monotonic() >= next_poll:
                self._poll_new_nodes()
                self._kill_stuck()
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
        """Start the workers and drive them to the end of the queue."""
        from ray.exceptions import RayActorError, RayTaskError

        self._add_samplers(self.nodes)
        first = node_groups(self.nodes, self.group_size)
        cap = min(len(self.jobs), self.max_workers or len(self.jobs))
        self.idle = first[cap:]
        self._start_together(first[:cap])
        try:
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
        except BaseException:
            self._shutdown(quiet=True)  # the error in flight is the one to report
            raise
        self._shutdown()
        return Execution(
            "ray",
            self.started,
            self.group_size,
            {n.name: n.cpus for n in self.nodes if n.node_id not in self.dead_nodes},
            self.policy.restarts,
            dict(self.cores_by_model),
        )

    def _shutdown(self, quiet: bool = False) -> None:
        """Stop every actor of the run, writing the utilisation samples first. An output
        error while writing them is raised (one line) unless ``quiet``: another error is
        already on its way."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        failed: BaseException | None = None
        for _, actor, _ in self.workers.values():
            ray.kill(actor)
        for name, sampler in self.samplers.items():
            try:
                rows = ray.get(sampler.stop.remote(), timeout=15)
                ray.get(self.collector.write_utilization.remote(name, rows))
            except (RayActorError, GetTimeoutError):
                pass  # that node is gone: its samples with it
            except RayTaskError as exc:
                cause = remote_cause(exc)
                failed = failed or (cause if isinstance(cause, RaynnError) else exc)
            ray.kill(sampler)
        ray.kill(self.queue)
        ray.kill(self.collector)
        if failed is not None and not quiet:
            raise failed from None
