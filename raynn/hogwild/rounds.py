"""One round of a HOGWILD run on Ray: one pinned worker actor per planned core, every node's
shared-memory segment, the driver evaluating the server's weights until the workers finish,
one fails, or nodes join (the round then ends early and the next one re-plans).

:func:`train_round` runs a :class:`RoundPlan` and returns a :class:`Round`, which says how the
round ended (:class:`RoundEnd`); the restart loop (:mod:`raynn.hogwild.ray_run`) records it.
The parts: the segments (:class:`~raynn.hogwild.segments.RoundSegments`), the worker actors
(:class:`~raynn.hogwild.round_workers.RoundWorkers`, a worker group) and, here, the driver's watch.
"""

from __future__ import annotations

import enum
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from raynn.hogwild.client import ServerClient
from raynn.hogwild.context import WorkerContext
from raynn.hogwild.evaluator import Evaluator
from raynn.hogwild.plan import PlannedWorker
from raynn.hogwild.prepare import Prepared, start_epoch
from raynn.hogwild.protocol import ServerState
from raynn.hogwild.round_workers import RoundWorkers, WorkerFailure
from raynn.hogwild.segments import ROUND_STOP_SECONDS, RoundSegments
from raynn.hogwild.view import HogwildView
from raynn.hogwild.worker import worker_row
from raynn.placement.nodes import Node, alive_node_ids

JOIN_POLL_SECONDS = 2.0  # how often a round looks for nodes that joined the cluster


@dataclass
class AttemptContext:
    """What every round of an attempt shares: the prepared run, the server shards (actor
    handles) and their client, the live view, the evaluator."""

    p: Prepared
    shards: list[Any]
    client: ServerClient
    view: HogwildView
    evaluator: Evaluator


@dataclass
class RoundPlan:
    """What one round starts from: its number, the nodes, one slot per worker, and the
    server's state (the workers start from its weights)."""

    number: int
    nodes: list[Node]
    slots: list[PlannedWorker]
    state: ServerState


class RoundEnd(enum.Enum):
    """How a round ended."""

    COMPLETED = "completed"  # every worker finished its epochs
    WORKER_DIED = "worker died"  # an actor or its node was lost: a new round may follow
    WORKER_FAILED = "worker failed"  # a worker's training raised: the run fails
    NODES_JOINED = "nodes joined"  # ended early so that the next round has workers there
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM or an error of the driver (``interrupt``)


@dataclass
class Round:
    """What one round did, and how it ended.

    Attributes:
        ended: how it ended.
        rows: the workers' ``hogwild/`` rows (``round`` = its number); none if interrupted.
        util: the utilization rows.
        record: its entry of run.json (see :func:`train_round`).
        failure: the worker that failed or died.
        joined: the node ids that joined (``NODES_JOINED``).
        workers_info: each worker's ready() info.
        not_released: segments left (``node:name``).
        interrupt: what interrupted it (``INTERRUPTED``); the runner raises it once the
            attempt's outcome is recorded.
    """

    ended: RoundEnd
    rows: list[dict] = field(default_factory=list)
    util: list[dict] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    failure: WorkerFailure | None = None
    joined: list[str] = field(default_factory=list)
    workers_info: dict[str, Any] = field(default_factory=dict)
    not_released: list[str] = field(default_factory=list)
    interrupt: BaseException | None = None

    @property
    def restartable(self) -> bool:
        """Whether a new round may carry on: a worker died, or nodes joined."""
        return self.ended in (RoundEnd.WORKER_DIED, RoundEnd.NODES_JOINED)


def train_round(ctx: AttemptContext, plan: RoundPlan, record: dict[str, Any]) -> Round:
    """Start one worker per slot from ``plan.state``, evaluate the server's weights on a timer
    until every worker is done, one fails, nodes join or the driver is interrupted, then kill
    the workers and release the shared memory.

    ``record`` is the round's entry of run.json: filled as the round goes (start epoch, nodes,
    segments, start-up seconds, ...), so it holds what the round set up whatever happens.
    What interrupted the round is not raised: the returned round carries it
    (``RoundEnd.INTERRUPTED``)."""
    return HogwildRound(ctx, plan, record).run()


class HogwildRound:
    """One round, from the driver: start, watch, end early if it must, clean up."""

    def __init__(self, ctx: AttemptContext, plan: RoundPlan, record: dict[str, Any]) -> None:
        import ray

        self.ctx, self.plan = ctx, plan
        self.entered = time.monotonic()
        driver = ray.get_runtime_context().get_node_id()
        self.segments = RoundSegments.plan(plan.nodes, plan.slots, driver)
        self.workers = RoundWorkers(plan.slots)
        n_train, epochs = len(ctx.p.data.y_train), ctx.p.spec.training.epochs
        self.first_epoch = start_epoch(plan.state.samples, n_train, epochs)
        self.record = record
        record.update(
            start_epoch=self.first_epoch,
            start_steps=plan.state.steps,  # what the server held when the round began
            start_samples=plan.state.samples,
            nodes={nd.name: [s.core for s in plan.slots if s.node is nd] for nd in plan.nodes},
            segments=sorted(name for name, _ in self.segments.names.values()),
            solo=self.segments.solo,
        )
        self.failure: WorkerFailure | None = None
        self.joined: list[str] = []
        self.not_released: list[str] = []

    def run(self) -> Round:
        """Start, watch, end early if it must, clean up; the round's result."""
        interrupt = None
        try:
            self._start()
            self._watch()
            if self.workers.running:  # ended early: the live workers leave and push their rest
                self.segments.stop()
                self.workers.collect(ROUND_STOP_SECONDS)
        except BaseException as exc:  # Ctrl-C, SIGTERM, Ray going down: recorded, then raised
            interrupt = exc
        finally:
            self.workers.kill()
            self.not_released = self.segments.release()
            if self.not_released:  # in the round's record too, so an interrupted round says so
                self.record["segments_not_released"] = self.not_released
            self.workers.forget()
        if interrupt is not None:
            return self._result(RoundEnd.INTERRUPTED, interrupt)
        return self._result(self._ended())

    def _start(self) -> None:
        """Servers and workers start together: every node is synced at the state's version."""
        import ray

        ctx, plan = self.ctx, self.plan
        node_names = sorted({s.node.name for s in plan.slots})
        started = [srv.start.remote(node_names) for srv in ctx.shards]
        data_ref, weights_ref = ray.put(ctx.p.data), ray.put(plan.state.weights)
        self.segments.create(plan.state.weights, weights_ref)
        members = self.workers.start(self._contexts(), data_ref, weights_ref)
        ray.get(started, timeout=300)
        self.failure = self.workers.run(members)  # once every worker is ready
        self.record["startup_seconds"] = time.monotonic() - self.entered

    def _contexts(self) -> dict[str, WorkerContext]:
        """Each planned worker's context."""
        plan, per_node = self.plan, Counter(s.node_index for s in self.plan.slots)
        return {
            s.worker_id: WorkerContext(
                worker_id=s.worker_id,
                node=s.node.name,
                slot=s.slot,
                slots=per_node[s.node_index],
                index=s.index,
                workers=len(plan.slots),
                core=s.core,
                spec=self.ctx.p.spec,
                segment=self.segments.name_on(s.node.node_id),
                version=plan.state.version,
                shards=self.ctx.shards,
                bounds=self.ctx.client.bounds,
                start_epoch=self.first_epoch,
                solo=self.segments.solo,
            )
            for s in plan.slots
        }

    def _watch(self) -> None:
        """Evaluate on the timer and look for joined nodes until every worker is done, one
        fails or nodes join."""
        view, evaluator = self.ctx.view, self.ctx.evaluator
        view.workers = len(self.plan.slots)
        if not evaluator.rows:  # the clock starts with the first round's training
            evaluator.t0 = time.time()
            view.show(evaluator.evaluate(self.current()))
        every = self.ctx.p.spec.training.eval_every_seconds
        next_eval = time.monotonic() + every
        next_look = time.monotonic() + JOIN_POLL_SECONDS
        while self.workers.running and self.failure is None and not self.joined:
            self.failure = self.workers.poll(max(0.0, min(0.25, next_eval - time.monotonic())))
            if self.failure is None and time.monotonic() >= next_eval:
                view.show(evaluator.evaluate(self.current()))
                next_eval = time.monotonic() + every
            else:
                view.show()
            if self.failure is None and self.workers.running and time.monotonic() >= next_look:
                known = {n.node_id for n in self.plan.nodes}
                self.joined = sorted(alive_node_ids(with_cpu=True) - known)
                next_look = time.monotonic() + JOIN_POLL_SECONDS

    def current(self) -> ServerState:
        """The weights to evaluate now: on a solo node the node's shared weights (with the
        steps and samples since the round began), else the server's."""
        shared, start = self.segments.local, self.plan.state
        if shared is None:
            return self.ctx.client.state()
        steps, samples = start.steps + shared.node_steps(), start.samples + shared.node_samples()
        return ServerState(shared.snapshot(), start.version, steps, samples)

    def _ended(self) -> RoundEnd:
        if self.failure is not None:
            return RoundEnd.WORKER_DIED if self.failure.died else RoundEnd.WORKER_FAILED
        return RoundEnd.NODES_JOINED if self.joined else RoundEnd.COMPLETED

    def _result(self, ended: RoundEnd, interrupt: BaseException | None = None) -> Round:
        rows, util = ([], []) if interrupt is not None else self._rows(ended)
        return Round(
            ended=ended,
            rows=rows,
            util=util,
            record=self.record,
            failure=self.failure,
            joined=self.joined,
            workers_info=self.workers.info,
            not_released=self.not_released,
            interrupt=interrupt,
        )

    def _rows(self, ended: RoundEnd) -> tuple[list[dict], list[dict]]:
        """Every slot's row: the worker's own, or one saying why it has none."""
        f, number = self.failure, self.plan.number
        stopped = f"stopped: worker {f.worker_id} failed" if f else None
        if ended is RoundEnd.NODES_JOINED:
            stopped = "stopped: node(s) joined, workers re-planned"
        status = "restarted" if ended in (RoundEnd.WORKER_DIED, RoundEnd.NODES_JOINED) else "failed"
        rows, util = [], []
        for s in self.plan.slots:
            got = self.workers.results.get(s.worker_id)
            if got is not None:
                row = {**got["row"], "round": number}
                if got.get("stopped"):  # left early, its steps pushed: the next round goes on
                    row.update(status=status, error=stopped)
                rows.append(row)
                util.extend(got["utilization"])
                continue
            row = worker_row(
                worker=s.worker_id,
                node=s.node.name,
                slot=s.slot,
                role="sync" if s.slot == 0 else "worker",
                core=s.core,
                threads=1,
                start=self.ctx.evaluator.t0,
                status=status,
                error=(f.reason if f and f.worker_id == s.worker_id else stopped)
                or "did not finish",
            )
            rows.append({**row, "round": number})
        return rows, util


__all__ = ["AttemptContext", "Round", "RoundEnd", "RoundPlan", "train_round"]
