"""``executor="ray"``: the parameter server shards and the restart loop of a HOGWILD run.

One :class:`~raynn.hogwild.server.ParameterServer` actor per shard on the driver's node
(restarted from its checkpoint if it dies; :func:`start_servers`), then rounds of workers
(:func:`~raynn.hogwild.rounds.train_round`): a round ended by a worker that died, or by nodes
that joined, is followed by one re-planned over the nodes alive now. :class:`RoundBook` keeps
what the rounds did for the attempt's tables and run.json.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raynn.hogwild.client import ServerClient
from raynn.hogwild.evaluator import Evaluator
from raynn.hogwild.plan import PlannedWorker, plan_workers
from raynn.hogwild.prepare import Outcome, Prepared, server_kwargs
from raynn.hogwild.protocol import ServerState, shard_bounds
from raynn.hogwild.rounds import AttemptContext, Round, RoundEnd, RoundPlan, train_round
from raynn.hogwild.server import ParameterServer
from raynn.hogwild.tables import write_tables
from raynn.hogwild.view import HogwildView
from raynn.placement.nodes import Node, on_node, probe_nodes
from raynn.placement.restarts import GiveUp, RestartPolicy
from raynn.runs.files import atomic_write

log = logging.getLogger(__name__)

SERVER_NAME = "raynn_hogwild_server"  # the shard actors' names: <SERVER_NAME>_<run id>_<shard>


def run_ray(
    p: Prepared,
    run_dir: Path,
    n: int,
    nodes: list[Node],
    slots: list[PlannedWorker],
    view: HogwildView,
    evaluator: Evaluator,
) -> Outcome:
    """Start the server shards, then train in rounds: a worker that dies ends its round, and
    the next round re-plans the workers over the nodes still alive and carries on from the
    server's current weights (at most ``hogwild.max_restarts`` times).

    Args:
        p: the prepared spec.
        run_dir: the run directory (server checkpoints, the tables after every round).
        n: the attempt's number (its table parts).
        nodes: the nodes of the first round.
        slots: the first round's workers (:func:`~raynn.hogwild.plan.plan_workers`).
        view: the live progress view.
        evaluator: evaluates the server's weights (and keeps the eval rows).

    Returns:
        Every round's worker rows and utilization rows, and the attempt's fields for
        run.json (see :class:`RoundBook`); ``interrupted`` holds what interrupted training
        (Ctrl-C, SIGTERM, Ray going down), for the runner to raise once it recorded the rest.
    """
    entered = time.monotonic()
    shards, client, restored = start_servers(p, run_dir)
    ctx = AttemptContext(p, shards, client, view, evaluator)
    book = RoundBook(run_dir, n, evaluator, RestartPolicy.for_rounds(p.spec.hogwild.max_restarts))
    try:
        plan = RoundPlan(0, nodes, slots, restored)  # from what the shards restored
        while book.keep(train_round(ctx, plan, book.begin(plan))):
            nodes = probe_nodes()  # the nodes alive now (a lost node's actors die with it)
            plan = RoundPlan(len(book.rounds), nodes, plan_workers(p.spec, nodes), client.state())
        if book.interrupt is None:
            book.timings["training"] = time.monotonic() - entered - book.timings.get("startup", 0.0)
            if book.fields.get("error") is None:
                view.show(evaluator.evaluate(client.state(), final=True))
    except BaseException as exc:  # Ctrl-C, Ray going down: recorded with the rounds, then raised
        book.interrupt = exc
    finally:
        stop_servers(shards, book)
    return Outcome(book.rows, book.util, book.fields, book.interrupt)


def start_servers(p: Prepared, run_dir: Path) -> tuple[list[Any], ServerClient, ServerState]:
    """One server actor per shard on the driver's node, each starting from its checkpoint or
    its ``checkpoints/server-<i>.init.npy``.

    Returns:
        The shard actors, their client, and the state they start from (read here from the
        same files, so the first round needs no round trip to them).
    """
    import ray

    driver_node = ray.get_runtime_context().get_node_id()
    bounds = shard_bounds(p.initial.size, p.spec.hogwild.server_shards)
    server_cls = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(ParameterServer)
    shards, local = [], []
    for i, (lo, hi) in enumerate(bounds):
        init = run_dir / "checkpoints" / f"server-{i}.init.npy"
        if not init.is_file():
            atomic_write(init, lambda fh, part=p.initial[lo:hi]: np.save(fh, part))
        kwargs = server_kwargs(p.spec, run_dir, i, lo, p.param_count)
        local.append(ParameterServer(str(init), **kwargs))  # what the actor will start from
        shards.append(
            server_cls.options(
                name=f"{SERVER_NAME}_{run_dir.name}_{i}", **on_node(driver_node)
            ).remote(str(init), **kwargs)
        )
    first = local[0]
    weights = np.concatenate([srv.w for srv in local])
    restored = ServerState(weights, first.version, first.steps, first.samples)
    return shards, ServerClient(shards, bounds), restored


def stop_servers(shards: list[Any], book: RoundBook) -> None:
    """Read the shards' stats into ``book``, checkpoint them a last time and kill them."""
    import ray

    cleanup = time.monotonic()
    try:
        book.fields["servers"] = ray.get([s.stats.remote() for s in shards], timeout=30)
        ray.get([s.checkpoint.remote() for s in shards], timeout=30)
    except Exception as exc:  # noqa: BLE001 - stats are nice to have
        log.warning("could not read server stats: %s", exc)
    for s in shards:
        try:
            ray.kill(s, no_restart=True)
        except Exception:  # noqa: BLE001
            pass
    book.timings["cleanup"] = time.monotonic() - cleanup


@dataclass
class RoundBook:
    """What an attempt's rounds did: their rows, and its fields for run.json.

    ``fields``: ``seconds`` (start-up, training, clean-up), ``rounds`` (one entry per round),
    the first round's ``workers``, ``start_epoch``, ``nodes`` and ``segments``, ``threads``,
    every worker's ``workers_info``, ``segments_not_released``, the ``error`` if it failed
    and the server shards' stats (``servers``).
    """

    run_dir: Path
    n: int
    evaluator: Evaluator
    policy: RestartPolicy  # how many rounds a death may end
    interrupt: BaseException | None = None  # what interrupted the attempt

    def __post_init__(self) -> None:
        self.rows: list[dict] = []
        self.util: list[dict] = []
        self.timings: dict[str, float] = {}
        self.rounds: list[dict[str, Any]] = []
        self.fields: dict[str, Any] = {"seconds": self.timings, "rounds": self.rounds}

    def begin(self, plan: RoundPlan) -> dict[str, Any]:
        """A new round's entry in ``rounds``, which the round fills as it goes."""
        record = {"start": time.time(), "workers": len(plan.slots)}
        self.rounds.append(record)
        return record

    def keep(self, r: Round) -> bool:
        """Record round ``r`` (its entry from :meth:`begin`; its tables written at once);
        whether a new round follows."""
        record = r.record
        if r.ended is RoundEnd.INTERRUPTED:
            self.interrupt = r.interrupt
            return False
        self._add(record, r)
        if r.ended is RoundEnd.COMPLETED:
            return False
        if r.ended is RoundEnd.NODES_JOINED:
            record["ended"] = f"node(s) joined: {', '.join(r.joined)}"
            log.info("%s; re-planning the workers", record["ended"])
            return True
        return self._after_failure(record, r)

    def _add(self, record: dict[str, Any], r: Round) -> None:
        for key in ("workers", "start_epoch", "nodes", "segments"):
            self.fields.setdefault(key, record[key])  # the first round's, at the top level
        self.fields.setdefault("threads", 1)
        if r.workers_info:
            self.fields.setdefault("workers_info", {}).update(r.workers_info)
        if r.not_released:
            self.fields.setdefault("segments_not_released", []).extend(r.not_released)
        self.rows.extend(r.rows)
        self.util.extend(r.util)
        write_tables(self.run_dir, self.n, self.rows, self.evaluator.rows, self.util)
        if "startup" not in self.timings:
            self.timings["startup"] = record["startup_seconds"]

    def _after_failure(self, record: dict[str, Any], r: Round) -> bool:
        """A worker failed or died: whether a new round may replace it."""
        assert r.failure is not None
        record["error"] = f"worker {r.failure.worker_id} failed: {r.failure.reason}"
        if isinstance(self.policy.on_round_end(r.restartable), GiveUp):
            self.fields["error"] = record["error"]
            if r.restartable:
                self.fields["error"] += f" (after {self.policy.restarts} restart(s))"
            for row in r.rows:
                if row["status"] == "restarted":
                    row["status"] = "failed"
            return False
        log.warning(
            "%s; re-planning the workers (restart %d)", record["error"], self.policy.restarts
        )
        return True
