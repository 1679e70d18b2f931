"""A round's worker actors, seen from the driver: start them (one pinned
:class:`~raynn.hogwild.worker.HogwildWorker` per planned slot), wait until they are ready, run
them, watch them finish or fail, collect the last ones, kill them.

The one part of a round that handles Ray actors; the round around it
(:mod:`raynn.hogwild.rounds`) decides when to stop them. A worker group shared by every
executor can take its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raynn.hogwild.context import WorkerContext
from raynn.hogwild.plan import PlannedWorker
from raynn.placement.nodes import on_node
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
        self.actors: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self._ready: dict[str, Any] = {}  # worker id -> its ready() call
        self._running: dict[Any, str] = {}  # run() call -> worker id

    @property
    def running(self) -> bool:
        """Whether a worker started training and has not reported back."""
        return bool(self._running)

    def start(self, contexts: dict[str, WorkerContext], data_ref: Any, weights_ref: Any) -> None:
        """Create each slot's actor on its node with its context, the data and the weights."""
        import ray

        from raynn.hogwild.worker import HogwildWorker

        # No runtime_env: it would cost fresh worker processes; the worker pins itself and caps
        # its threads (raynn.placement.cores.pin_current_process) before any heavy torch work.
        worker_cls = ray.remote(num_cpus=1, max_restarts=0)(HogwildWorker)
        # Each node's sync worker (slot 0) is created last. The first actors get the worker
        # processes Ray started before the job, which trained ~4% slower here (cause unknown,
        # benchmarks/RESULTS.md); on top of the sync role's own cost, that made slot 0 the
        # node's straggler, and with a static split the other workers idle at the end.
        for s in sorted(self.slots, key=lambda x: -x.slot):
            self.actors[s.worker_id] = worker_cls.options(**on_node(s.node.node_id)).remote(
                contexts[s.worker_id], data_ref, weights_ref
            )

    def ready(self) -> WorkerFailure | None:
        """Wait for every worker to be ready (:attr:`info`); the first that could not start."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        self._ready = {s.worker_id: self.actors[s.worker_id].ready.remote() for s in self.slots}
        for wid, ref in self._ready.items():
            try:
                self.info[wid] = ray.get(ref, timeout=READY_SECONDS)
            except (RayActorError, RayTaskError) as exc:
                return WorkerFailure(wid, remote_reason(exc), isinstance(exc, RayActorError))
        return None

    def run(self) -> None:
        """Start every worker's training, each told its node's worker processes."""
        pids: dict[int, list[int]] = {}
        for s in self.slots:
            pids.setdefault(s.node_index, []).append(self.info[s.worker_id]["pid"])
        self._running = {
            self.actors[s.worker_id].run.remote(pids[s.node_index]): s.worker_id for s in self.slots
        }

    def poll(self, timeout: float) -> WorkerFailure | None:
        """Wait at most ``timeout`` seconds for a worker to finish (:attr:`results`); the
        failure if it raised or died."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        failure = None
        done, _ = ray.wait(list(self._running), num_returns=1, timeout=timeout)
        for ref in done:
            wid = self._running.pop(ref)
            try:
                self.results[wid] = ray.get(ref)
            except (RayActorError, RayTaskError) as exc:
                # an actor that died can be replaced; an error in its training cannot
                failure = WorkerFailure(wid, remote_reason(exc), isinstance(exc, RayActorError))
        return failure

    def collect(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for the workers still running (told to stop) and
        keep the results of those that finish."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        refs = list(self._running)
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for ref in done:
            wid = self._running.pop(ref)
            try:
                self.results[wid] = ray.get(ref)
            except (RayActorError, RayTaskError):
                pass  # the worker that failed, or one that died with it

    def kill(self) -> None:
        """Kill every actor (those already gone are skipped)."""
        import ray

        for actor in self.actors.values():
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def forget(self) -> None:
        """Fetch what finished of the calls still out, so Ray does not log their errors as
        unhandled (after :meth:`kill`)."""
        consume(list(self._running) + list(self._ready.values()))


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
