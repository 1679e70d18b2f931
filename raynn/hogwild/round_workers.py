"""A round's worker actors, seen from the driver: one pinned
:class:`~raynn.hogwild.worker.HogwildWorker` per planned slot, run as a
:class:`~raynn.placement.group.WorkerGroup` of Ray actors like every executor's workers.

The group creates them, lets them go together (each ``run`` told its node's worker
processes), watches them end, die or fail, and kills them. This module keeps only what is
HOGWILD's own: which planned slot each worker has, what its end means for the round (its
result, or the :class:`WorkerFailure` that ends the round) and no replacement within a round
(a new round re-plans; :mod:`raynn.hogwild.rounds` decides when to stop them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from raynn.errors import RaynnError
from raynn.hogwild.context import WorkerContext
from raynn.hogwild.plan import PlannedWorker
from raynn.placement.backends import ActorMember, RayActorBackend
from raynn.placement.group import Member, NotReady, WorkerGroup
from raynn.placement.nodes import NodeGroup, on_node
from raynn.placement.restarts import RestartPolicy
from raynn.placement.session import remote_reason

READY_SECONDS = 300.0  # how long a worker may take to start (load torch, attach its segment)


@dataclass(frozen=True)
class WorkerFailure:
    """A worker that did not finish: which, why, and whether its process died."""

    worker_id: str
    reason: str
    died: bool  # its actor or node was lost (a new worker may take over), not its training


class RoundWorkers:
    """The worker actors of one round, one per slot of ``slots``.

    Attributes:
        info: each ready worker's :meth:`~raynn.hogwild.worker.HogwildWorker.ready` info.
        results: each finished worker's :meth:`~raynn.hogwild.worker.HogwildWorker.run` result.
    """

    def __init__(self, slots: list[PlannedWorker]) -> None:
        self.slots = slots
        self.info: dict[str, Any] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.group: WorkerGroup | None = None
        self._members: list[ActorMember] = []  # every worker started, for forget()
        self._planned: dict[str, PlannedWorker] = {}  # the group's worker id -> its slot
        self._failure: WorkerFailure | None = None
        self._collecting = False  # told to stop: a failure now is no news

    @property
    def running(self) -> bool:
        """Whether a worker started training and has not reported back."""
        return self.group is not None and bool(self.group.members)

    def start(
        self, contexts: dict[str, WorkerContext], data_ref: Any, weights_ref: Any
    ) -> list[Member]:
        """Create each slot's actor on its node with its context, the data and the weights;
        none trains until :meth:`run`."""
        import ray

        from raynn.hogwild.worker import HogwildWorker

        # No runtime_env: it would cost fresh worker processes; the worker pins itself and caps
        # its threads (raynn.placement.cores.pin_current_process) before any heavy torch work.
        worker_cls = ray.remote(num_cpus=1, max_restarts=0)(HogwildWorker)
        by_core = {(s.node.node_id, s.core): s for s in self.slots}

        def create(worker_id: str, slot: NodeGroup) -> Any:
            s = self._planned[worker_id] = by_core[slot[0].node_id, slot[1][2][0]]
            place = on_node(s.node.node_id)
            return worker_cls.options(**place).remote(contexts[s.worker_id], data_ref, weights_ref)

        self.group = WorkerGroup(
            RayActorBackend(create, run=self._run, ready="ready", pid="pid"),
            RestartPolicy(budget=0),  # within a round none is replaced: the next round re-plans
            on_start=self._members.append,
            on_lost=self._lost,
            on_exit=self._exited,
            on_failed=self._failed,
        )
        # Each node's sync worker (slot 0) is created last. The first actors get the worker
        # processes Ray started before the job, which trained ~4% slower here (cause unknown,
        # benchmarks/RESULTS.md); on top of the sync role's own cost, that made slot 0 the
        # node's straggler, and with a static split the other workers idle at the end.
        order = sorted(self.slots, key=lambda x: -x.slot)
        return self.group.create(_slot_of(s) for s in order)

    def run(self, members: list[Member]) -> WorkerFailure | None:
        """Wait for every worker to be ready (:attr:`info`), then start their training, each
        told its node's worker processes; the first worker that could not start."""
        try:
            self.group.launch(members, timeout=READY_SECONDS, strict=True)
        except NotReady as exc:
            from ray.exceptions import RayActorError

            died = isinstance(exc.cause, RayActorError)
            return WorkerFailure(self._id(exc.member), remote_reason(exc.cause), died)
        return None

    def _run(self, member: ActorMember) -> Any:
        """``member``'s training call (every worker is ready: their pids are known)."""
        node = self._planned[member.worker_id].node_index
        self.info[self._id(member)] = member.info
        pids = [
            m.info["pid"] for m in self._members if self._planned[m.worker_id].node_index == node
        ]
        return member.actor.run.remote(pids)

    def poll(self, timeout: float) -> WorkerFailure | None:
        """Wait at most ``timeout`` seconds for a worker to finish (:attr:`results`); the
        failure if it raised or died."""
        self._failure = None
        self.group.poll(timeout)
        return self._failure

    def collect(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for the workers still running (told to stop) and
        keep the results of those that finish."""
        self._collecting = True
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            self.group.poll(max(0.0, deadline - time.monotonic()))

    def kill(self) -> None:
        """Kill every actor still up."""
        if self.group is not None:
            self.group.drain()

    def forget(self) -> None:
        """Fetch what finished of the calls still out, so Ray does not log their errors as
        unhandled (after :meth:`kill`)."""
        consume([ref for m in self._members for ref in m.refs])

    # -- the group's callbacks -----------------------------------------------------------------
    def _id(self, member: Member) -> str:
        return self._planned[member.worker_id].worker_id

    def _exited(self, member: Member, value: Any) -> None:
        self.results[self._id(member)] = value

    def _lost(self, member: Member) -> bool:
        self._fail(member, member.death, died=True)
        return False  # no replacement within a round

    def _failed(self, member: Member, error: BaseException) -> None:
        reason = f"{type(error).__name__}: {error}"
        self._fail(member, reason if isinstance(error, RaynnError) else remote_reason(error))

    def _fail(self, member: Member, reason: str, died: bool = False) -> None:
        if not self._collecting and self._failure is None:
            self._failure = WorkerFailure(self._id(member), reason, died)


def _slot_of(s: PlannedWorker) -> NodeGroup:
    """A planned worker's place as the group names it: its node and its one core."""
    return (s.node, (s.node.name, (s.core,), [s.core]))


def consume(refs: list[Any]) -> None:
    """Fetch what finished of ``refs`` so Ray does not log their errors as unhandled."""
    import ray

    if not refs:
        return
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=2)
    for ref in done:
        try:
            ray.get(ref, timeout=1)
        except Exception:  # noqa: BLE001 - a second failure or a killed actor: already handled
            pass


__all__ = ["RoundWorkers", "WorkerFailure", "consume"]
