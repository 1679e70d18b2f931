"""``executor="ray"``: the parameter server shards and the restart loop of a HOGWILD run.

One :class:`~raynn.hogwild.server.ParameterServer` actor per shard on the driver's node
(restarted from its checkpoint if it dies), then rounds of workers
(:func:`~raynn.hogwild.rounds.train_round`): a round ended by a worker that died, or by nodes
that joined, is followed by one re-planned over the nodes alive now.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from raynn.hogwild.client import ServerClient
from raynn.hogwild.evaluator import Evaluator
from raynn.hogwild.prepare import Outcome, Prepared, server_kwargs
from raynn.hogwild.protocol import shard_bounds
from raynn.hogwild.rounds import PlannedWorker, plan_workers, train_round
from raynn.hogwild.server import ParameterServer
from raynn.hogwild.tables import write_tables
from raynn.hogwild.view import HogwildView
from raynn.placement.nodes import Node, on_node, probe_nodes
from raynn.placement.restarts import RestartPolicy
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
        slots: the first round's workers (:func:`~raynn.hogwild.rounds.plan_workers`).
        view: the live progress view.
        evaluator: evaluates the server's weights (and keeps the eval rows).

    Returns:
        Every round's worker rows and utilization rows, and the attempt's fields for
        run.json: its rounds, the first round's workers, nodes and segments, the server
        shards' stats, seconds of start-up, training and clean-up, and the error if it failed.
    """
    import ray

    spec = p.spec
    entered = time.monotonic()
    timings: dict[str, float] = {}
    fields: dict[str, Any] = {"seconds": timings}
    driver_node = ray.get_runtime_context().get_node_id()
    bounds = shard_bounds(p.initial.size, spec.hogwild.server_shards)
    server_cls = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(ParameterServer)
    shards, local = [], []
    for i, (lo, hi) in enumerate(bounds):
        init = run_dir / "checkpoints" / f"server-{i}.init.npy"
        if not init.is_file():
            atomic_write(init, lambda fh, part=p.initial[lo:hi]: np.save(fh, part))
        kwargs = server_kwargs(spec, run_dir, i, lo, p.param_count)
        local.append(ParameterServer(str(init), **kwargs))  # what the actor will start from
        shards.append(
            server_cls.options(
                name=f"{SERVER_NAME}_{run_dir.name}_{i}", **on_node(driver_node)
            ).remote(str(init), **kwargs)
        )
    client = ServerClient(shards, bounds)
    rows: list[dict] = []
    util: list[dict] = []
    rounds: list[dict[str, Any]] = []
    fields["rounds"] = rounds
    policy = RestartPolicy.for_rounds(spec.hogwild.max_restarts)  # rounds a death may end
    try:
        # The first round starts from what the shards restored (no round trip to them).
        state = (
            np.concatenate([srv.w for srv in local]),
            local[0].version,
            local[0].steps,
            local[0].samples,
        )
        while True:
            record = {"start": time.time(), "workers": len(slots)}
            rounds.append(record)
            r = train_round(
                p, len(rounds) - 1, shards, client, nodes, slots, state, view, evaluator
            )
            record.update(r.record)
            for key in ("workers", "start_epoch", "nodes", "segments"):
                fields.setdefault(key, record[key])  # the first round's, at the top level
            fields.setdefault("threads", 1)
            if r.workers_info:
                fields.setdefault("workers_info", {}).update(r.workers_info)
            if r.not_released:
                fields.setdefault("segments_not_released", []).extend(r.not_released)
            rows.extend(r.rows)
            util.extend(r.util)
            write_tables(run_dir, n, rows, evaluator.rows, util)  # after every round
            if "startup" not in timings:
                timings["startup"] = record["startup_seconds"]
            if r.failure is None and not r.joined:
                break
            if r.failure is None:
                record["ended"] = f"node(s) joined: {', '.join(r.joined or [])}"
                log.info("%s; re-planning the workers", record["ended"])
            else:
                wid, reason = r.failure
                record["error"] = f"worker {wid} failed: {reason}"
                if not r.restartable or not policy.replace():
                    fields["error"] = record["error"]
                    if r.restartable:
                        fields["error"] += f" (after {policy.restarts} restart(s))"
                    for row in r.rows:
                        if row["status"] == "restarted":
                            row["status"] = "failed"
                    break
                log.warning(
                    "%s; re-planning the workers (restart %d)", record["error"], policy.restarts
                )
            # the nodes alive now (a lost node's actors die with it), each with its CPUs
            nodes = probe_nodes()
            slots = plan_workers(spec, nodes)
            state = client.weights()
        timings["training"] = time.monotonic() - entered - timings.get("startup", 0.0)
        if fields.get("error") is None:
            view.show(evaluator(*client.weights(), final=True))
    except BaseException as exc:  # Ctrl-C, Ray going down: the caller still records the rounds
        if rounds:
            rounds[-1].update(getattr(exc, "partial_round", {}))
        exc.partial_outcome = Outcome(rows, util, fields)  # type: ignore[attr-defined]
        raise
    finally:
        cleanup = time.monotonic()
        try:
            fields["servers"] = ray.get([s.stats.remote() for s in shards], timeout=30)
            ray.get([s.checkpoint.remote() for s in shards], timeout=30)
        except Exception as exc:  # noqa: BLE001 - stats are nice to have
            log.warning("could not read server stats: %s", exc)
        for s in shards:
            try:
                ray.kill(s, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        timings["cleanup"] = time.monotonic() - cleanup
    return Outcome(rows, util, fields)
