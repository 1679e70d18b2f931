"""Run a HOGWILD spec: validate, start the server and the workers, evaluate, record, clean up.

``executor="ray"``: one :class:`~raynn.hogwild.server.ParameterServer` actor per shard on the
driver's node (restarted from its checkpoint if it dies), and on every node one pinned
:class:`~raynn.hogwild.trainer.HogwildWorker` actor per core sharing that node's
:class:`~raynn.hogwild.shared_params.SharedParams`. The driver evaluates the server's weights
on the test split every ``training.eval_every_seconds``.

``executor="serial"``: the baseline, plain SGD in this process with the same step code
(:func:`raynn.hogwild.trainer.train`), evaluated on the same timer.

Run directory (``runs/<run-id>/``, tables written atomically, one part per attempt)::

    run.json                      spec, versions, nodes, server stats, status, wall seconds
    eval/part-<n>.parquet         EVAL_SCHEMA: global weights' test loss/accuracy over time
    hogwild/part-<n>.parquet      HOGWILD_SCHEMA: one row per worker
    utilization/<node>-<n>.parquet  per-core CPU % (raynn.results.UTILIZATION_SCHEMA)
    checkpoints/server-<i>.ckpt   the server shards' latest weights + version
    report.md                     ``raynn report``

Shared memory is released on success, on error and on Ctrl-C: the driver unlinks every
node's segment in ``finally``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from raynn.data import ArrayDataset, load_dataset
from raynn.errors import OutputError, RaynnError, SpecError
from raynn.files import atomic_write, file_stem
from raynn.hogwild.server import (
    ParameterServer,
    ServerClient,
    read_checkpoint,
    shard_bounds,
    version_count,
)
from raynn.hogwild.shared_params import (
    SharedParams,
    create_detached,
    flatten,
    load_flat,
    param_numel,
    request_stop,
    sweep_stale_segments,
)
from raynn.hogwild.spec import HogwildSpec
from raynn.hogwild.trainer import (
    LoopStats,
    build,
    make_loss,
    make_optimizer,
    make_schedule,
    normalizer,
    train,
    utilization_rows,
    worker_row,
)
from raynn.kfold import RunResult, _check_writable, _versions
from raynn.results import (
    SCHEMA_VERSION,
    UTILIZATION_SCHEMA,
    RunLock,
    create_run_dir,
    output_root,
    write_json,
    write_table,
)
from raynn.scheduler.cores import usable_cpus
from raynn.scheduler.executor import alive_node_ids
from raynn.scheduler.monitor import Progress, UtilizationSampler, _fmt_seconds
from raynn.scheduler.queue import QueueStats
from raynn.spec import spec_from_dict
from raynn.training import evaluate

log = logging.getLogger(__name__)

EVAL_SCHEMA = pa.schema(
    [
        ("attempt", pa.int32()),
        ("time", pa.float64()),
        ("elapsed", pa.float64()),
        ("version", pa.int64()),
        ("step", pa.int64()),
        ("samples", pa.int64()),
        ("epoch", pa.float64()),
        ("loss", pa.float64()),
        ("accuracy", pa.float64()),
        ("final", pa.bool_()),
        ("per_class_accuracy", pa.list_(pa.float64())),
    ]
)

HOGWILD_SCHEMA = pa.schema(
    [
        ("worker", pa.string()),
        ("node", pa.string()),
        ("slot", pa.int32()),
        ("role", pa.string()),
        ("core", pa.int32()),
        ("threads", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("epochs", pa.int32()),
        ("steps", pa.int64()),
        ("samples", pa.int64()),
        ("seconds", pa.float64()),
        ("samples_per_second", pa.float64()),
        ("loss", pa.float64()),
        ("accuracy", pa.float64()),
        ("hold_seconds", pa.float64()),
        ("pushes", pa.int64()),
        ("pulls", pa.int64()),
        ("refused", pa.int64()),
        ("wait_seconds", pa.float64()),
        ("sync_seconds", pa.float64()),
        ("staleness_mean", pa.float64()),
        ("staleness_max", pa.float64()),
        ("staleness_p50", pa.float64()),
        ("staleness_p95", pa.float64()),
        ("staleness_hist", pa.list_(pa.int64())),
        ("start_time", pa.float64()),
        ("end_time", pa.float64()),
        ("round", pa.int32()),
    ]
)

SERVER_NAME = "raynn_hogwild_server"
JOIN_POLL_SECONDS = 2.0  # how often a round looks for nodes that joined the cluster
ROUND_STOP_SECONDS = 30.0  # how long a round that ends early waits for its workers' last pushes


@dataclass
class Prepared:
    """A validated spec with its data and initial weights."""

    spec: HogwildSpec
    data: ArrayDataset
    initial: np.ndarray
    param_count: int


def prepare(spec: HogwildSpec, data: ArrayDataset | None = None) -> Prepared:
    """Load the data (unless given) and build the model once; raise on anything invalid."""
    data = load_dataset(spec.dataset) if data is None else data
    try:
        model = build(spec, data)
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *data.in_shape))
    except Exception as exc:  # user model code: any error is a spec problem
        raise SpecError(
            f"spec key 'model': cannot build {spec.model.name!r} for input "
            f"{data.in_shape} and {data.num_classes} classes ({type(exc).__name__}: {exc}); "
            "check model.name and model.args"
        ) from None
    make_loss(spec, data)  # a bad training.loss fails here, before any worker starts
    initial = flatten(model)
    if spec.hogwild.server_shards > initial.size:
        raise SpecError(
            f"spec key 'hogwild.server_shards': {spec.hogwild.server_shards} shards for "
            f"{initial.size} weights; use fewer shards"
        )
    return Prepared(spec, data, initial, param_numel(model))


def validate(spec: HogwildSpec) -> str:
    """Check the spec, its dataset and its model without running; a one-line description."""
    p = prepare(spec)
    h, t = spec.hogwild, spec.training
    test = 0 if p.data.y_test is None else len(p.data.y_test)
    wpn = h.workers_per_node
    return (
        f"hogwild: {spec.model.label} ({p.param_count} params) on {p.data.name} "
        f"{p.data.in_shape}, {len(p.data.y_train)} train / {test} test samples; "
        f"{t.epochs} epochs, batch {t.batch_size}, {wpn} workers/node "
        f"(this machine: {len(usable_cpus())} cores), push every {h.push_every} steps, "
        f"max_staleness {h.max_staleness}, {h.server_shards} server shard(s)"
    )


EVAL_WRITE_SECONDS = 2.0  # how often the eval rows of a running attempt reach the disk


class _Evaluator:
    """Evaluates flat weight vectors on the test split (one thread) into eval rows."""

    def __init__(
        self,
        prepared: Prepared,
        attempt: int,
        rows: list[dict[str, Any]] | None = None,
        run_dir: Path | None = None,
    ) -> None:
        self.run_dir = run_dir  # where the rows are written as they come (a killed driver
        self.written = 0.0  # keeps them), at most every EVAL_WRITE_SECONDS
        self.data = prepared.data
        self.spec = prepared.spec
        self.model = build(prepared.spec, prepared.data)
        self.norm = normalizer(prepared.data)
        self.loss = make_loss(prepared.spec, prepared.data)  # reported as trained
        self.attempt = attempt
        self.rows: list[dict[str, Any]] = [] if rows is None else rows
        self.t0 = time.time()

    def __call__(
        self, weights: np.ndarray, version: int, steps: int, samples: int, final: bool = False
    ) -> dict[str, Any]:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            load_flat(self.model, weights)
            d = self.data
            x, y = (d.x_test, d.y_test) if d.y_test is not None else (d.x_train, d.y_train)
            ev = evaluate(
                self.model,
                x,
                y,
                None,
                self.norm,
                d.num_classes,
                self.spec.training.eval_batch_size,
                self.loss,
            )
        finally:
            torch.set_num_threads(threads)
        now = time.time()
        row = {
            "attempt": self.attempt,
            "time": now,
            "elapsed": now - self.t0,
            "version": version_count(version),
            "step": steps,
            "samples": samples,
            "epoch": samples / max(len(d.y_train), 1),
            "loss": ev.loss,
            "accuracy": ev.accuracy,
            "final": final,
            "per_class_accuracy": ev.per_class if final else [],
        }
        self.rows.append(row)
        if self.run_dir is not None and (final or now - self.written >= EVAL_WRITE_SECONDS):
            write_table(
                self.run_dir / "eval" / f"part-{self.attempt}.parquet", self.rows, EVAL_SCHEMA
            )
            self.written = now
        return row


class _View(Progress):
    """The live progress view, counting samples instead of jobs."""

    def __init__(self, spec: HogwildSpec, n_train: int, enabled: bool) -> None:
        super().__init__(spec.name, spec.training.epochs, enabled=enabled)
        self.total = spec.training.epochs * n_train
        self.n_train = n_train
        self.workers = 0
        self.last: dict[str, Any] = {}
        self.started = time.time()

    def show(self, row: dict[str, Any] | None = None) -> None:
        if row is not None:
            self.last = row
        stats = QueueStats(
            total=self.total,
            pending=0,
            running=self.workers,
            done=min(int(self.last.get("samples", 0)), self.total),
            failed=0,
            elapsed=time.time() - self.started,
        )
        self.update(stats)

    def line(self, stats: QueueStats) -> str:
        acc = self.last.get("accuracy")
        return (
            f"[{self.title}] hogwild, {self.workers} worker(s), elapsed "
            f"{_fmt_seconds(stats.elapsed)}: epoch {stats.done / max(self.n_train, 1):.1f}/"
            f"{self.epochs_per_job}, version {self.last.get('version', 0)}, test accuracy "
            f"{'-' if acc is None else f'{acc:.4f}'}"
        )

    def finish(self) -> None:
        if self.enabled:
            self.close(
                QueueStats(
                    self.total,
                    0,
                    0,
                    min(int(self.last.get("samples", 0)), self.total),
                    0,
                    time.time() - self.started,
                )
            )
        else:
            self.close()


def _server_kwargs(spec: HogwildSpec, run_dir: Path, shard: int, lo: int, pc: int) -> dict:
    h = spec.hogwild
    return {
        "shard": shard,
        "lo": lo,
        "param_numel": pc,
        "checkpoint_path": str(run_dir / "checkpoints" / f"server-{shard}.ckpt"),
        "checkpoint_seconds": h.checkpoint_seconds,
        "max_staleness": h.max_staleness,
        "staleness_lr": h.staleness_lr,
    }


def _start_epoch(samples: int, n_train: int, epochs: int) -> int:
    return min(samples // max(n_train, 1), epochs)


# -- serial -----------------------------------------------------------------------------------
def _run_serial(
    p: Prepared,
    run_dir: Path,
    attempt: dict[str, Any],
    n: int,
    threads: int | None,
    view: _View,
    evals: list[dict],
) -> tuple[list[dict], list[dict], list[dict]]:
    spec = p.spec
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or len(usable_cpus()))
    node = socket.gethostname()
    server = ParameterServer(p.initial, **_server_kwargs(spec, run_dir, 0, 0, p.param_count))
    server.start(["serial"])
    weights, version, _, samples0 = server.weights()
    start_epoch = _start_epoch(samples0, len(p.data.y_train), spec.training.epochs)
    attempt.update({"workers": 1, "threads": torch.get_num_threads(), "start_epoch": start_epoch})
    attempt["nodes"] = {node: usable_cpus()}
    model = build(spec, p.data)
    load_flat(model, weights)
    opt = make_optimizer(spec, model)
    per_epoch = -(-len(p.data.y_train) // spec.training.batch_size)
    schedule = make_schedule(spec, opt, per_epoch)
    evaluator = _Evaluator(p, n, evals, run_dir)
    sampler = UtilizationSampler(node, spec.hogwild.sample_interval, own_tree=os.getpid())
    view.workers = 1
    sync = {"last": weights, "version": version, "seq": 0, "steps": 0, "samples": 0}
    every = spec.training.eval_every_seconds

    def push(stats: LoopStats) -> tuple[np.ndarray, int, int, int]:
        flat = flatten(model)
        payload = flat - sync["last"]
        payload[p.param_count :] = flat[p.param_count :]
        sync["seq"] += 1
        reply = server.push(
            "serial",
            sync["seq"],
            payload,
            sync["version"],
            stats.steps - sync["steps"],
            stats.samples - sync["samples"],
        )
        sync.update(last=reply.weights, version=reply.version)
        sync.update(steps=stats.steps, samples=stats.samples)
        return server.weights()

    next_eval = time.monotonic() + every

    def tick(stats: LoopStats) -> None:
        nonlocal next_eval
        if time.monotonic() < next_eval:
            return
        t0 = time.perf_counter()
        view.show(evaluator(*push(stats)))
        model.train()
        next_eval = time.monotonic() + every
        stats.excluded_seconds += time.perf_counter() - t0

    start = time.time()
    stats: LoopStats | None = None
    sampler.start()
    evaluator(weights, version, *server.weights()[2:])
    try:
        stats = train(
            model,
            opt,
            schedule,
            p.data,
            epochs=spec.training.epochs,
            batch_size=spec.training.batch_size,
            seed=spec.seed,
            start_epoch=start_epoch,
            after_step=tick,
            loss_fn=make_loss(spec, p.data),
        )
        view.show(evaluator(*push(stats), final=True))
        rows = [
            worker_row("serial", node, 0, "serial", None, attempt["threads"], stats, None, start)
        ]
    except Exception as exc:
        attempt["error"] = f"{type(exc).__name__}: {exc}"
        rows = [
            worker_row(
                "serial",
                node,
                0,
                "serial",
                None,
                attempt["threads"],
                stats,
                None,
                start,
                status="failed",
                error=attempt["error"],
            )
        ]
    finally:
        torch.set_num_threads(previous)
        util = utilization_rows(sampler)
        server.checkpoint()
        attempt["servers"] = [server.stats()]
    return rows, evaluator.rows, util


# -- Ray --------------------------------------------------------------------------------------
@dataclass
class _Node:
    """A node of the cluster: Ray's id, a display name and the CPUs its workers may use."""

    node_id: str
    name: str
    cpus: list[int]


@dataclass
class _Slot:
    worker_id: str
    node: _Node
    node_index: int
    slot: int
    index: int
    core: int


def _plan_slots(spec: HogwildSpec, nodes: list[Any]) -> list[_Slot]:
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
    slots: list[_Slot] = []
    for ni, node in enumerate(nodes):
        count = len(node.cpus) if wpn == "auto" else min(wpn, len(node.cpus))
        for s in range(count):
            slots.append(_Slot(f"n{ni}w{s}", node, ni, s, len(slots), node.cpus[s]))
    return slots


def _release_segments(names: dict[str, tuple[str, str]], driver_node: str) -> list[str]:
    """Unlink each node's segment (here for the driver's node, by a task elsewhere)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from raynn.hogwild.shared_params import unlink_segment

    failed = []
    remote = ray.remote(num_cpus=0, max_retries=0)(unlink_segment)
    refs = []
    for node_id, (name, label) in names.items():
        if node_id == driver_node:
            unlink_segment(name)
            continue
        strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
        refs.append((label, name, remote.options(scheduling_strategy=strategy).remote(name)))
    for label, name, ref in refs:
        try:
            ray.get(ref, timeout=60)
        except Exception:  # noqa: BLE001 - a dead node's memory went with it
            failed.append(f"{label}:{name}")
    return failed


@dataclass
class _Round:
    """One set of workers training until they finish or one of them fails."""

    rows: list[dict]
    util: list[dict]
    failure: tuple[str, str] | None = None
    restartable: bool = False  # the worker died (actor or node lost), not its training
    joined: list[str] | None = None  # the round was ended to give joining nodes workers


def _run_ray(
    p: Prepared,
    run_dir: Path,
    attempt: dict[str, Any],
    n: int,
    executor: Any,
    nodes: list[Any],
    slots: list[_Slot],
    view: _View,
    evals: list[dict],
) -> tuple[list[dict], list[dict], list[dict]]:
    """Start the server shards, then train in rounds: a worker that dies ends its round, and
    the next round re-plans the workers over the nodes still alive and carries on from the
    server's current weights (at most ``hogwild.max_restarts`` times)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    spec = p.spec
    entered = time.monotonic()
    timings = attempt.setdefault("seconds", {})
    driver_node = ray.get_runtime_context().get_node_id()
    bounds = shard_bounds(p.initial.size, spec.hogwild.server_shards)
    server_cls = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(ParameterServer)
    shards, local = [], []
    for i, (lo, hi) in enumerate(bounds):
        init = run_dir / "checkpoints" / f"server-{i}.init.npy"
        if not init.is_file():
            atomic_write(init, lambda fh, part=p.initial[lo:hi]: np.save(fh, part))
        kwargs = _server_kwargs(spec, run_dir, i, lo, p.param_count)
        local.append(ParameterServer(str(init), **kwargs))  # what the actor will start from
        strategy = NodeAffinitySchedulingStrategy(driver_node, soft=False)
        shards.append(
            server_cls.options(
                name=f"{SERVER_NAME}_{run_dir.name}_{i}", scheduling_strategy=strategy
            ).remote(str(init), **kwargs)
        )
    client = ServerClient(shards, bounds)
    evaluator = _Evaluator(p, n, evals, run_dir)
    rows: list[dict] = []
    util: list[dict] = []
    rounds: list[dict[str, Any]] = attempt.setdefault("rounds", [])
    deaths = 0  # rounds ended by a worker that died (joins do not count)
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
            r = _train_round(
                p, attempt, record, shards, client, nodes, slots, state, view, evaluator
            )
            rows.extend(r.rows)
            util.extend(r.util)
            _write_tables(run_dir, n, rows, evaluator.rows, util)  # after every round
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
                deaths += 1
                if not r.restartable or deaths > spec.hogwild.max_restarts:
                    attempt["error"] = record["error"]
                    if r.restartable:
                        attempt["error"] += f" (after {deaths - 1} restart(s))"
                    for row in r.rows:
                        if row["status"] == "restarted":
                            row["status"] = "failed"
                    break
                log.warning("%s; re-planning the workers (restart %d)", record["error"], deaths)
            # the nodes alive now (a lost node's actors die with it), each with its CPUs
            nodes = [_Node(x.node_id, x.name, list(x.cpus)) for x in executor.probe_nodes()]
            slots = _plan_slots(spec, nodes)
            state = client.weights()
        timings["training"] = time.monotonic() - entered - timings.get("startup", 0.0)
        if attempt.get("error") is None:
            view.show(evaluator(*client.weights(), final=True))
    finally:
        cleanup = time.monotonic()
        try:
            attempt["servers"] = ray.get([s.stats.remote() for s in shards], timeout=30)
            ray.get([s.checkpoint.remote() for s in shards], timeout=30)
        except Exception as exc:  # noqa: BLE001 - stats are nice to have
            log.warning("could not read server stats: %s", exc)
        for s in shards:
            try:
                ray.kill(s, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        timings["cleanup"] = time.monotonic() - cleanup
    return rows, evaluator.rows, util


def _train_round(
    p: Prepared,
    attempt: dict[str, Any],
    record: dict[str, Any],
    shards: list[Any],
    client: ServerClient,
    nodes: list[Any],
    slots: list[_Slot],
    state: tuple[np.ndarray, int, int, int],
    view: _View,
    evaluator: _Evaluator,
) -> _Round:
    """Start one worker per slot from ``state`` (weights, version, steps, samples), evaluate the
    server's weights on a timer until every worker is done or one fails, then kill the
    workers and release the shared memory."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from raynn.hogwild.trainer import HogwildWorker

    def on(node_id: str) -> dict[str, Any]:
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}

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
    start_epoch = _start_epoch(samples0, len(p.data.y_train), spec.training.epochs)
    record.update(
        {
            "start_epoch": start_epoch,
            "start_steps": steps0,  # what the server held when the round began
            "start_samples": samples0,
            "nodes": {nd.name: [s.core for s in slots if s.node is nd] for nd in nodes},
            "segments": sorted(name for name, _ in segments.values()),
        }
    )
    for key in ("workers", "start_epoch", "nodes", "segments"):
        attempt.setdefault(key, record[key])  # the first round's, at the top level
    attempt.setdefault("threads", 1)
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
                created.append(creator.options(**on(node_id)).remote(name, weights_ref, count))
        ray.get(created, timeout=300)
        # No runtime_env: it would cost fresh worker processes; the worker pins itself and caps
        # its threads (raynn.scheduler.cores.pin_current_process) before any heavy torch work.
        worker_cls = ray.remote(num_cpus=1, max_restarts=0)(HogwildWorker)
        per_node = {s.node_index: sum(x.node_index == s.node_index for x in slots) for s in slots}
        # Each node's sync worker (slot 0) is created last. The first actors get the worker
        # processes Ray started before the job, which trained ~4% slower here (cause unknown,
        # benchmarks/RESULTS.md); on top of the sync role's own cost, that made slot 0 the
        # node's straggler, and with a static split the other workers idle at the end.
        for s in sorted(slots, key=lambda x: -x.slot):
            actors[s.worker_id] = worker_cls.options(**on(s.node.node_id)).remote(
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
                start_epoch,
                solo,
            )
        ray.get(started, timeout=300)
        ready = {s.worker_id: actors[s.worker_id].ready.remote() for s in slots}
        for wid, ref in ready.items():
            try:
                info = ray.get(ref, timeout=300)
                attempt.setdefault("workers_info", {})[wid] = info
            except (RayActorError, RayTaskError) as exc:
                failure, restartable = (wid, _reason(exc)), isinstance(exc, RayActorError)
                break
        refs = {} if failure else {actors[s.worker_id].run.remote(): s.worker_id for s in slots}
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
                    failure, restartable = (wid, _reason(exc)), isinstance(exc, RayActorError)
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
            _stop_workers({k: v for k, v in segments.items() if k in up}, driver_node)
            done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=ROUND_STOP_SECONDS)
            for ref in done:
                wid = refs.pop(ref)
                try:
                    results[wid] = ray.get(ref)
                except (RayActorError, RayTaskError):
                    pass  # the worker that failed, or one that died with it
    finally:
        for actor in actors.values():
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if mine is not None:
            mine.close()  # unlinked below with the others
        try:
            up = alive_node_ids() | {driver_node}
            alive = {k: v for k, v in segments.items() if k in up}
            leftover = _release_segments(alive, driver_node)
            leftover += [
                f"{label}:{name}" for k, (name, label) in segments.items() if k not in alive
            ]
            if leftover:
                attempt.setdefault("segments_not_released", []).extend(leftover)
        except Exception as exc:  # noqa: BLE001 - Ray itself is going down (Ctrl-C)
            log.warning("could not release shared memory segments: %s", exc)
            from raynn.hogwild.shared_params import unlink_segment

            for name, _ in segments.values():
                unlink_segment(name)
        _consume(list(refs) + list(ready.values()))
    rows, util = [], []
    round_no = len(attempt["rounds"]) - 1
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
    return _Round(rows, util, failure, restartable, joined or None)


def _stop_workers(segments: dict[str, tuple[str, str]], driver_node: str) -> None:
    """Set the stop flag in each node's segment (here for the driver's node, by a task
    elsewhere): its workers leave at their next step and its sync role pushes the rest."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=0, max_retries=0)(request_stop)
    refs = []
    for node_id, (name, _) in segments.items():
        if node_id == driver_node:
            request_stop(name)
        else:
            strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
            refs.append(remote.options(scheduling_strategy=strategy).remote(name))
    try:
        ray.get(refs, timeout=ROUND_STOP_SECONDS)
    except Exception as exc:  # noqa: BLE001 - a node that went: its steps went with it
        log.warning("could not stop every node's workers: %s", exc)


def _consume(refs: list[Any]) -> None:
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


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"


# -- the run ----------------------------------------------------------------------------------
def _write_tables(
    run_dir: Path, n: int, rows: list[dict], evals: list[dict], util: list[dict]
) -> None:
    write_table(run_dir / "hogwild" / f"part-{n}.parquet", rows, HOGWILD_SCHEMA)
    write_table(run_dir / "eval" / f"part-{n}.parquet", evals, EVAL_SCHEMA)
    by_node: dict[str, list[dict]] = {}
    for r in util:
        by_node.setdefault(r["node"], []).append(r)
    for node, node_rows in by_node.items():
        path = run_dir / "utilization" / f"{file_stem(node)}-{n}.parquet"
        write_table(path, node_rows, UTILIZATION_SCHEMA)


def run(
    spec: HogwildSpec | None = None,
    *,
    executor: str = "ray",
    output: str | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    address: str | None = None,
    num_cpus: int | None = None,
    threads: int | None = None,
    dataset: ArrayDataset | None = None,
) -> RunResult:
    """Train ``spec`` with HOGWILD (``executor="ray"``) or the serial baseline (``"serial"``).

    Args:
        spec: the HOGWILD spec; omitted when resuming.
        executor: ``"ray"`` (workers on every core of every node) or ``"serial"``.
        output: root folder for run directories (default: the spec's ``output.dir``).
        resume: an existing run directory: continue from its server checkpoint.
        progress: show the live progress view.
        address: Ray cluster address (None: embedded local Ray, or ``RAY_ADDRESS``).
        num_cpus: CPUs of the embedded local Ray.
        threads: torch threads of the serial baseline (default: every usable core).
        dataset: arrays to train on instead of loading ``spec.dataset`` (Python API).

    Returns:
        The run directory, its status (``completed`` / ``failed``) and the ``hogwild/`` rows of
        this attempt (one per worker, with a ``status`` column).
    """
    if executor not in ("ray", "serial"):
        raise RaynnError(f"unknown executor {executor!r}; valid: ray, serial")
    meta: dict[str, Any] = {}
    if resume is not None:
        run_dir = Path(resume)
        try:
            meta = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError) as exc:
            raise RaynnError(
                f"cannot resume {run_dir}: no readable run.json ({exc}); pass a run "
                "directory made by 'raynn run'"
            ) from None
        spec = spec_from_dict(meta["spec"])
    if not isinstance(spec, HogwildSpec):
        raise RaynnError("hogwild run() needs a HogwildSpec or resume=RUN_DIR")
    if resume is None:  # refused before the data loads or Ray starts
        root = output_root(output or spec.output.dir)
        _check_writable(root)
    prepared = prepare(spec, dataset)
    ray_ex = None
    lock = None
    nodes: list[Any] = []
    slots: list[_Slot] = []
    embedded = False
    if executor == "ray":
        import os

        import ray

        from raynn.scheduler.executor import RayExecutor

        embedded = (
            not ray.is_initialized() and address is None and not os.environ.get("RAY_ADDRESS")
        )
        local = usable_cpus(num_cpus)
        if embedded:  # fail before starting Ray at all
            _plan_slots(spec, [_Node("local", socket.gethostname(), local)])
        ray_ex = RayExecutor(address=address, num_cpus=num_cpus)
    try:
        if ray_ex is not None:
            ray_ex._connect()
            if embedded:  # one node, this machine: no need to ask it for its CPUs
                node_id = ray.get_runtime_context().get_node_id()
                nodes = [_Node(node_id, socket.gethostname(), local)]
            else:
                probe = getattr(ray_ex, "probe_nodes", None) or ray_ex._probe_nodes
                nodes = [_Node(n.node_id, n.name, list(n.cpus)) for n in probe()]
            slots = _plan_slots(spec, nodes)
        if resume is None:
            run_dir = create_run_dir(root, spec.name)
            meta = {
                "schema_version": SCHEMA_VERSION,
                "spec": spec.to_dict(),
                "argv": sys.argv,
                "versions": _versions(),
                "driver": socket.gethostname(),
                "runs": [],
            }
        lock = RunLock(run_dir)
        lock.acquire()
        n = len(meta["runs"])
        attempt: dict[str, Any] = {"executor": executor, "start": time.time(), "status": "running"}
        meta["runs"].append(attempt)
        write_json(run_dir / "run.json", meta)
        view = _View(spec, len(prepared.data.y_train), progress)
        rows: list[dict] = []
        evals: list[dict] = []
        util: list[dict] = []
        try:
            if executor == "serial":
                rows, _, util = _run_serial(prepared, run_dir, attempt, n, threads, view, evals)
            else:
                rows, _, util = _run_ray(
                    prepared, run_dir, attempt, n, ray_ex, nodes, slots, view, evals
                )
            ok = "error" not in attempt and all(r["status"] in ("ok", "restarted") for r in rows)
            attempt["status"] = "completed" if ok else "failed"
        except KeyboardInterrupt:
            attempt["status"] = "interrupted"
            raise
        except BaseException as exc:
            attempt["status"] = "failed"
            attempt["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            view.finish()
            attempt["end"] = time.time()
            attempt["wall_seconds"] = attempt["end"] - attempt["start"]
            final = [e for e in evals if e["final"]]
            if final:
                attempt["final_accuracy"] = final[-1]["accuracy"]
            try:
                _write_tables(run_dir, n, rows, evals, util)
                write_json(run_dir / "run.json", meta)
            except OutputError:
                pass  # the original error (often the same full disk) is the one to report
    finally:
        if ray_ex is not None:
            ray_ex.close()
        if lock is not None:
            lock.release()
    from raynn.report import write_report

    write_report(run_dir)
    jobs = pa.Table.from_pylist(rows, schema=HOGWILD_SCHEMA).to_pandas()
    return RunResult(run_dir, attempt["status"], jobs)


def final_weights(run_dir: str | Path) -> np.ndarray:
    """The server's latest weights of a run (its shard checkpoints, concatenated)."""
    paths = sorted(
        Path(run_dir, "checkpoints").glob("server-*.ckpt"),
        key=lambda q: int(q.stem.split("-")[1]),
    )
    if not paths:
        raise RaynnError(f"{run_dir} has no server checkpoint; was it a hogwild run?")
    return np.concatenate([read_checkpoint(q)[0] for q in paths])
