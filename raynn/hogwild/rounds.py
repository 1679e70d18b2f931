"""One round of a HOGWILD run on Ray: one pinned worker actor per planned core, every node's
shared-memory segment, the driver evaluating the server's weights until the workers finish,
one fails, or nodes join (the round then ends early and the next one re-plans).

A round returns what it did (:class:`Round`); the restart loop (:mod:`raynn.hogwild.ray_run`)
records it.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raynn.errors import SpecError
from raynn.hogwild.client import ServerClient
from raynn.hogwild.evaluator import Evaluator
from raynn.hogwild.prepare import Prepared, start_epoch
from raynn.hogwild.segments import ROUND_STOP_SECONDS, release_all, stop_workers
from raynn.hogwild.shared_params import SharedParams, create_detached, sweep_stale_segments
from raynn.hogwild.view import HogwildView
from raynn.hogwild.worker import worker_row
from raynn.placement.nodes import Node, alive_node_ids, on_node
from raynn.placement.session import remote_reason
from raynn.spec.hogwild import HogwildSpec

log = logging.getLogger(__name__)

JOIN_POLL_SECONDS = 2.0  # how often a round looks for nodes that joined the cluster


@dataclass
class PlannedWorker:
    """Where one worker runs: its node (and index), slot on the node, global index, core."""

    worker_id: str
    node: Node
    node_index: int
    slot: int
    index: int
    core: int


def plan_workers(spec: HogwildSpec, nodes: list[Any]) -> list[PlannedWorker]:
    """One slot per worker on each node (``hogwild.workers_per_node``); SpecError if the
    nodes cannot take the spec."""
    wpn = spec.hogwild.workers_per_node
    largest = max((len(n.cpus) for n in nodes), default=0)
    if wpn != "auto" and wpn > largest:
        raise SpecError(
            f"spec key 'hogwild.workers_per_node': {wpn} is more than the largest node has "
            f"({largest} CPUs); use at most {largest} or 'auto'"
        )
    h = spec.hogwild
    if h.max_staleness is not None and h.max_staleness < len(nodes) - 1:
        raise SpecError(
            f"spec key 'hogwild.max_staleness': {h.max_staleness} is below nodes - 1 "
            f"({len(nodes) - 1}) for {len(nodes)} nodes, so no node could ever push; use at "
            f"least {len(nodes) - 1} or null"
        )
    slots: list[PlannedWorker] = []
    for ni, node in enumerate(nodes):
        count = len(node.cpus) if wpn == "auto" else min(wpn, len(node.cpus))
        for s in range(count):
            slots.append(PlannedWorker(f"n{ni}w{s}", node, ni, s, len(slots), node.cpus[s]))
    return slots


@dataclass
class Round:
    """One set of workers training until they finish or one of them fails."""

    rows: list[dict]
    util: list[dict]
    failure: tuple[str, str] | None = None
    restartable: bool = False  # the worker died (actor or node lost), not its training
    joined: list[str] | None = None  # the round was ended to give joining nodes workers
    record: dict[str, Any] = field(default_factory=dict)  # the round's entry of run.json
    workers_info: dict[str, Any] = field(default_factory=dict)  # each worker's ready() info
    not_released: list[str] = field(default_factory=list)  # segments left: "node:name"


def train_round(
    p: Prepared,
    round_no: int,
    shards: list[Any],
    client: ServerClient,
    nodes: list[Any],
    slots: list[PlannedWorker],
    state: tuple[np.ndarray, int, int, int],
    view: HogwildView,
    evaluator: Evaluator,
) -> Round:
    """Start one worker per slot from ``state`` (weights, version, steps, samples), evaluate the
    server's weights on a timer until every worker is done or one fails, then kill the
    workers and release the shared memory.

    Returns:
        The round's worker rows (``round`` = ``round_no``), utilization rows, the failure if
        any, its run.json entry (start epoch, nodes, segments, start-up seconds, ...), the
        workers' ready() info and the segments it could not release.
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    from raynn.hogwild.worker import HogwildWorker

    spec = p.spec
    entered = time.monotonic()
    driver_node = ray.get_runtime_context().get_node_id()
    weights, version, steps0, samples0 = state
    node_names = sorted({s.node.name for s in slots})
    token = uuid.uuid4().hex[:10]
    segments = {
        node.node_id: (SharedParams.segment_name(token, i), node.name)
        for i, node in enumerate(nodes)
        if any(s.node_index == i for s in slots)
    }
    first_epoch = start_epoch(samples0, len(p.data.y_train), spec.training.epochs)
    record: dict[str, Any] = {
        "start_epoch": first_epoch,
        "start_steps": steps0,  # what the server held when the round began
        "start_samples": samples0,
        "nodes": {nd.name: [s.core for s in slots if s.node is nd] for nd in nodes},
        "segments": sorted(name for name, _ in segments.values()),
    }
    workers_info: dict[str, Any] = {}
    not_released: list[str] = []
    actors: dict[str, Any] = {}
    refs: dict[Any, str] = {}
    ready: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    failure: tuple[str, str] | None = None
    restartable = False
    joined: list[str] = []
    # One node, the driver's: pushes would only copy the node's weights to the server, so
    # they are rare (see HogwildWorker's ``solo``) and the driver reads the segment instead.
    solo = list(segments) == [driver_node]
    record["solo"] = solo
    mine: SharedParams | None = None

    def current() -> tuple[np.ndarray, int, int, int]:
        if mine is None:
            return client.weights()
        return mine.snapshot(), version, steps0 + mine.node_steps(), samples0 + mine.node_samples()

    try:
        # Servers and workers start together: every node is synced at ``version`` now.
        started = [srv.start.remote(node_names) for srv in shards]
        data_ref, weights_ref = ray.put(p.data), ray.put(weights)
        # The driver creates every node's segment before any worker starts: workers only attach.
        creator = ray.remote(num_cpus=0, max_retries=0)(create_detached)
        created = []
        for name in sweep_stale_segments():  # this node's; create_detached sweeps the others
            log.warning("removed a stale shared-memory segment of a killed run: %s", name)
        for node_id, (name, _) in segments.items():
            count = sum(s.node.node_id == node_id for s in slots)
            if node_id == driver_node:  # stays in the driver's resource tracker: a safety net
                mine = SharedParams.create(name, weights, count)
                if not solo:
                    mine.close()
                    mine = None
            else:
                created.append(creator.options(**on_node(node_id)).remote(name, weights_ref, count))
        ray.get(created, timeout=300)
        # No runtime_env: it would cost fresh worker processes; the worker pins itself and caps
        # its threads (raynn.placement.cores.pin_current_process) before any heavy torch work.
        worker_cls = ray.remote(num_cpus=1, max_restarts=0)(HogwildWorker)
        per_node = {s.node_index: sum(x.node_index == s.node_index for x in slots) for s in slots}
        # Each node's sync worker (slot 0) is created last. The first actors get the worker
        # processes Ray started before the job, which trained ~4% slower here (cause unknown,
        # benchmarks/RESULTS.md); on top of the sync role's own cost, that made slot 0 the
        # node's straggler, and with a static split the other workers idle at the end.
        for s in sorted(slots, key=lambda x: -x.slot):
            actors[s.worker_id] = worker_cls.options(**on_node(s.node.node_id)).remote(
                s.worker_id,
                s.node.name,
                s.slot,
                per_node[s.node_index],
                s.index,
                len(slots),
                s.core,
                spec,
                data_ref,
                segments[s.node.node_id][0],
                weights_ref,
                version,
                shards,
                client.bounds,
                first_epoch,
                solo,
            )
        ray.get(started, timeout=300)
        ready = {s.worker_id: actors[s.worker_id].ready.remote() for s in slots}
        for wid, ref in ready.items():
            try:
                info = ray.get(ref, timeout=300)
                workers_info[wid] = info
            except (RayActorError, RayTaskError) as exc:
                failure, restartable = (wid, remote_reason(exc)), isinstance(exc, RayActorError)
                break
        if failure is None:
            pids = {
                i: [workers_info[s.worker_id]["pid"] for s in slots if s.node_index == i]
                for i in per_node
            }
            refs = {actors[s.worker_id].run.remote(pids[s.node_index]): s.worker_id for s in slots}
        record["startup_seconds"] = time.monotonic() - entered
        view.workers = len(slots)
        if not evaluator.rows:  # the clock starts with the first round's training
            evaluator.t0 = time.time()
            view.show(evaluator(*current()))
        every = spec.training.eval_every_seconds
        next_eval = time.monotonic() + every
        next_look = time.monotonic() + JOIN_POLL_SECONDS
        while refs and failure is None and not joined:
            wait = max(0.0, min(0.25, next_eval - time.monotonic()))
            done, _ = ray.wait(list(refs), num_returns=1, timeout=wait)
            for ref in done:
                wid = refs.pop(ref)
                try:
                    results[wid] = ray.get(ref)
                except (RayActorError, RayTaskError) as exc:
                    # an actor that died can be replaced; an error in its training cannot
                    failure, restartable = (wid, remote_reason(exc)), isinstance(exc, RayActorError)
            if failure is None and time.monotonic() >= next_eval:
                view.show(evaluator(*current()))
                next_eval = time.monotonic() + every
            else:
                view.show()
            if failure is None and refs and time.monotonic() >= next_look:  # joins get workers
                joined = sorted(alive_node_ids(with_cpu=True) - {n.node_id for n in nodes})
                next_look = time.monotonic() + JOIN_POLL_SECONDS
        if refs:  # the round ends early: the live workers leave and push what they have
            up = alive_node_ids() | {driver_node}
            stop_workers({k: v for k, v in segments.items() if k in up}, driver_node)
            done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=ROUND_STOP_SECONDS)
            for ref in done:
                wid = refs.pop(ref)
                try:
                    results[wid] = ray.get(ref)
                except (RayActorError, RayTaskError):
                    pass  # the worker that failed, or one that died with it
    except BaseException as exc:  # Ctrl-C: the caller still records what the round set up
        exc.partial_round = record  # type: ignore[attr-defined]
        raise
    finally:
        for actor in actors.values():
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if mine is not None:
            mine.close()  # unlinked below with the others
        not_released = release_all(segments, driver_node)
        if not_released:  # in the round's record too, so an interrupted round still says so
            record["segments_not_released"] = not_released
        consume(list(refs) + list(ready.values()))
    rows, util = [], []
    stopped = f"stopped: worker {failure[0]} failed" if failure else None
    if joined and not failure:
        stopped, restartable = "stopped: node(s) joined, workers re-planned", True
    for s in slots:
        if s.worker_id in results:
            got = results[s.worker_id]
            row = {**got["row"], "round": round_no}
            if got.get("stopped"):  # left early, its steps pushed: the next round goes on
                row.update(status="restarted" if restartable else "failed", error=stopped)
            rows.append(row)
            util.extend(got["utilization"])
            continue
        error = failure[1] if failure and failure[0] == s.worker_id else stopped
        row = worker_row(
            s.worker_id,
            s.node.name,
            s.slot,
            "sync" if s.slot == 0 else "worker",
            s.core,
            1,
            None,
            None,
            evaluator.t0,
            status="restarted" if restartable else "failed",
            error=error or "did not finish",
        )
        rows.append({**row, "round": round_no})
    return Round(
        rows, util, failure, restartable, joined or None, record, workers_info, not_released
    )


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
