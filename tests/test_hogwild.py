"""HOGWILD: spec, shared memory, parameter server, serial and Ray runs, cleanup, seed API."""

from __future__ import annotations

import _thread
import copy
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from raynn.cli import main
from raynn.core.data import load_dataset
from raynn.core.optim import make_optimizer, make_schedule
from raynn.errors import SpecError
from raynn.hogwild.client import ServerClient
from raynn.hogwild.loop import Hooks, TrainContext, build, epoch_shard, train
from raynn.hogwild.node_sync import NodeSync
from raynn.hogwild.protocol import shard_bounds, version_count
from raynn.hogwild.runner import SERVER_NAME, run
from raynn.hogwild.server import ParameterServer
from raynn.hogwild.shared_params import (
    SharedParams,
    flat_numel,
    flatten,
    list_segments,
    request_stop,
    unlink_segment,
)
from raynn.spec import load_spec, spec_from_dict
from raynn.spec.hogwild import HogwildSpec, hogwild_spec_from_dict
from tests.conftest import REPO

DIGITS = REPO / "jobs" / "hogwild_digits.yaml"


def _raw(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    raw = yaml.safe_load(DIGITS.read_text())
    raw["output"] = {"dir": str(tmp_path / "runs")}
    raw["training"]["eval_every_seconds"] = 0.2
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def _spec(tmp_path: Path, **overrides: Any) -> HogwildSpec:
    return hogwild_spec_from_dict(_raw(tmp_path, **overrides))


def _own_segments(run_dir: Path) -> set[str]:
    """The shared-memory segments the run's rounds made (run.json): this test's own, not the
    ones of other runs on the machine (other tests, other users)."""
    attempt = json.loads((run_dir / "run.json").read_text())["runs"][-1]
    return {name for r in attempt["rounds"] for name in r.get("segments", ())}


def _final_accuracy(run_dir: Path) -> float:
    evals = pd.read_parquet(run_dir / "eval")
    return float(evals.loc[evals["final"], "accuracy"].iloc[-1])


# -- spec -------------------------------------------------------------------------------------
def test_job_files_load_and_round_trip():
    for name in ("hogwild_digits.yaml", "hogwild_mnist.yaml"):
        spec = load_spec(REPO / "jobs" / name)
        assert spec.kind == "hogwild" and spec.name and spec.output.dir
        assert spec_from_dict(spec.to_dict()) == spec
        assert json.loads(json.dumps(spec.to_dict())) == spec.to_dict()
    assert load_spec(REPO / "jobs" / "hogwild_mnist.yaml").dataset.root is None


def test_cli_validate_describes_the_run(capsys):
    assert main(["validate", str(DIGITS)]) == 0
    out = capsys.readouterr().out
    assert "ok: hogwild: mlp" in out and "1437 train / 360 test" in out


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"bogus": 1}, "'bogus'"),
        ({"model": ["mlp", "lenet"]}, "'model'"),
        ({"model": "nope"}, "'model'"),
        ({"hogwild": {"push_every": 0}}, "'hogwild.push_every'"),
        ({"hogwild": {"workers_per_node": "many"}}, "'hogwild.workers_per_node'"),
        ({"hogwild": {"max_staleness": -1}}, "'hogwild.max_staleness'"),
        ({"hogwild": {"staleness_lr": "yes"}}, "'hogwild.staleness_lr'"),
        ({"hogwild": {"speed": 3}}, "'hogwild.speed'"),
        ({"training": {"eval_every_seconds": 0}}, "'training.eval_every_seconds'"),
        ({"training": {"folds": 3}}, "'training.folds'"),
        ({"optimizer": {"lr": -1}}, "'optimizer.lr'"),
        ({"scheduler": "sometimes"}, "'scheduler'"),
    ],
)
def test_bad_specs_name_the_key(tmp_path, patch, key):
    with pytest.raises(SpecError) as err:
        spec_from_dict(_raw(tmp_path, **patch))
    assert key in str(err.value) and "\n" not in str(err.value)


def test_cli_rejects_bad_spec_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_raw(tmp_path, hogwild={"push_every": 0})))
    assert main(["run", str(bad), "--serial"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raynn: error: spec key 'hogwild.push_every'") and "\n" not in err


# -- parameter server -------------------------------------------------------------------------
def test_server_applies_pushes_and_records_staleness():
    s = ParameterServer(np.zeros(4, np.float32))
    assert s.start(["a", "b"]) == 0
    r = s.push("a", 1, np.ones(4, np.float32), 0, steps=5, samples=50)
    assert r.accepted and r.version == 1 and r.staleness == 0
    r = s.push("b", 1, np.full(4, 2, np.float32), 0, steps=5, samples=50)
    assert r.staleness == 1 and np.allclose(r.weights, 3) and r.version == 2
    assert s.weights()[1:] == (2, 10, 100)
    assert s.stats()["staleness"] == {"a": {0: 1}, "b": {1: 1}}


def test_server_staleness_lr_and_buffers():
    # 3 parameters, then 1 buffer (replaced, not added)
    s = ParameterServer(np.zeros(4, np.float32), param_numel=3, staleness_lr=True)
    s.start(["a", "b"])
    s.push("a", 1, np.array([1, 1, 1, 7], np.float32), 0)
    s.push("a", 2, np.array([1, 1, 1, 7], np.float32), 1)
    r = s.push("b", 1, np.array([4, 4, 4, 9], np.float32), 0)  # staleness 2: halved
    assert r.staleness == 2 and r.scale == 0.5
    assert np.allclose(r.weights, [4, 4, 4, 9])


def test_server_max_staleness_refuses_then_admits():
    s = ParameterServer(np.zeros(2, np.float32), max_staleness=1)
    s.start(["a", "b"])
    one = np.ones(2, np.float32)
    assert s.push("a", 1, one, 0).accepted
    refused = s.push("a", 2, one, 1)  # b would be 2 versions behind
    assert not refused.accepted and refused.weights is None and s.version == 1
    r = s.push("b", 1, one, 0)
    assert r.accepted and r.staleness == 1
    assert s.push("a", 2, one, 1).accepted  # b has caught up
    s.leave("b")
    assert s.push("a", 3, one, 3).accepted and s.push("a", 4, one, 4).accepted
    assert s.stats()["refused"] == 1


def test_server_checkpoint_restores_and_ignores_replayed_push(tmp_path):
    path = tmp_path / "server.ckpt"
    s = ParameterServer(np.zeros(3, np.float32), checkpoint_path=str(path), checkpoint_seconds=0)
    s.start(["a"])
    s.push("a", 1, np.ones(3, np.float32), 0, steps=4, samples=40)
    assert s.checkpoint() and path.is_file()
    again = ParameterServer(np.zeros(3, np.float32), checkpoint_path=str(path))
    assert version_count(again.restored_from) == 1 and version_count(again.version) == 1
    assert again.incarnation == 1 and np.allclose(again.w, 1)
    assert again.weights()[2:] == (4, 40)
    replay = again.push("a", 1, np.ones(3, np.float32), 0)  # seq 1 is in the checkpoint
    assert replay.duplicate and version_count(again.version) == 1 and np.allclose(again.w, 1)
    path.write_bytes(path.read_bytes()[:-5])  # truncated: fall back to the initial weights
    fresh = ParameterServer(np.full(3, 9, np.float32), checkpoint_path=str(path))
    assert fresh.restored_from is None and "CheckpointError" in fresh.restore_error
    assert np.allclose(fresh.w, 9)


def test_a_restored_server_never_reuses_a_version_it_handed_out(tmp_path):
    path = tmp_path / "server.ckpt"
    one = np.ones(3, np.float32)
    s = ParameterServer(np.zeros(3, np.float32), checkpoint_path=str(path), checkpoint_seconds=0)
    s.start(["a", "b"])
    s.push("a", 1, one, 0)
    assert s.checkpoint()  # the checkpoint holds version 1
    handed_out = [s.push("a", 2, one, 1).version, s.push("a", 3, one, 2).version]  # 2, 3: lost
    again = ParameterServer(np.zeros(3, np.float32), checkpoint_path=str(path))
    again.start(["a", "b"])
    b_reply = again.push("b", 1, one, 0)  # the restored server's next version: count 2
    assert version_count(b_reply.version) == 2 and b_reply.version not in handed_out
    # node a still holds the weights of the lost version 3 and asks for an own-reply: it must
    # get the real weights back, not "yours are current"
    reply = again.push("a", 4, one, handed_out[-1], omit=True)
    assert reply.accepted and not reply.own and reply.weights is not None
    assert np.allclose(reply.weights, 3) and reply.staleness == 1
    assert again.stats()["incarnation"] == 1 and again.stats()["version"] == 3


def test_sharded_client_equals_one_server():
    init = np.arange(10, dtype=np.float32)
    bounds = shard_bounds(10, 3)
    assert bounds[0][0] == 0 and bounds[-1][1] == 10 and len(bounds) == 3
    sharded = ServerClient(
        [
            ParameterServer(init[a:b], shard=i, lo=a, param_numel=8)
            for i, (a, b) in enumerate(bounds)
        ],
        bounds,
    )
    single = ServerClient([ParameterServer(init, param_numel=8)], [(0, 10)])
    for client in (sharded, single):
        client.start(["a", "b"])
        client.push("a", 1, np.ones(10, np.float32), 0, 1, 1)
    a, b = sharded.push("b", 1, init, 0, 1, 1), single.push("b", 1, init, 0, 1, 1)
    assert a.version == b.version == 2 and a.staleness == b.staleness == 1
    assert np.array_equal(a.weights, b.weights) and np.array_equal(sharded.weights()[0], a.weights)
    # nobody pushed since b's sync: the servers omit the weights and b rebuilds them exactly
    delta = np.linspace(-1, 1, 10).astype(np.float32)
    for client, reply in ((sharded, a), (single, b)):
        again = client.push("b", 2, delta, 2, 1, 1, base=reply.weights, param_count=8)
        assert again.own and again.staleness == 0
        assert np.array_equal(again.weights, client.weights()[0])
        assert np.array_equal(again.weights[8:], delta[8:])  # buffers are replaced


# -- shared memory ----------------------------------------------------------------------------
def _digits_spec(tmp_path):
    spec = _spec(tmp_path)
    return spec, load_dataset(spec.dataset)


def test_shared_params_views_see_each_others_steps(tmp_path):
    spec, data = _digits_spec(tmp_path)
    init = flatten(build(spec, data))
    name = SharedParams.segment_name("t" + str(time.time_ns())[-8:], 0)
    a = SharedParams.create(name, init, slots=2)
    b = SharedParams.attach(name)  # a second, separate mapping of the same segment
    try:
        ma, mb = a.bind(build(spec, data)), b.bind(build(spec, data))
        assert a.numel == flat_numel(ma) and np.array_equal(b.snapshot(), init)
        before = flatten(mb)
        opt = make_optimizer(spec, ma)
        x = torch.randn(8, *data.in_shape)
        torch.nn.functional.cross_entropy(ma(x), torch.arange(8) % 10).backward()
        opt.step()  # model a's step, in place ...
        assert not np.array_equal(flatten(mb), before)  # ... is model b's weights
        assert np.array_equal(flatten(mb), flatten(ma))
        a.record(1, 7, 70)
        a.mark_done(1)
        assert b.node_steps() == 7 and b.node_samples() == 70 and not b.all_done()
    finally:
        a.unlink()
        b.close()
        a.close()
    assert name not in list_segments() and not unlink_segment(name)


def test_node_sync_keeps_steps_taken_during_a_push():
    server = ParameterServer(np.zeros(3, np.float32))
    client = ServerClient([server], [(0, 3)])
    client.start(["n0", "n1"])
    name = SharedParams.segment_name("s" + str(time.time_ns())[-8:], 0)
    shared = SharedParams.create(name, np.zeros(3, np.float32), slots=1)
    try:
        sync = NodeSync("n0", shared, client, np.zeros(3, np.float32), 0, 2, 0, 3)
        server.push("n1", 1, np.full(3, 10, np.float32), 0)  # another node's update
        shared.flat += 1  # this node's local steps
        shared.record(0, 2, 20)
        sync.maybe_sync()  # push of +1 starts
        assert server.version == 2 and np.allclose(server.w, 11)
        shared.flat += 5  # steps taken while the push is in flight
        sync.maybe_sync()  # the reply is folded in
        assert np.allclose(shared.flat, 16) and sync.stats.staleness == {1: 1}
        assert server.weights()[2:] == (2, 20)
        sync.push()  # the in-flight steps go in the next push
        assert np.allclose(server.w, 16) and np.allclose(shared.flat, 16)
        server.push("n1", 2, np.full(3, 100, np.float32), 1)  # another node again
        shared.flat += 2  # unsent local steps
        sync.pull()  # others' update folded in, local steps kept for the next push
        assert np.allclose(shared.flat, 118) and np.allclose(sync.last, 116)
        assert sync.stats.pulls == 1 and server.bases["n0"] == server.version
    finally:
        shared.unlink()
        shared.close()


def test_a_stopped_node_pushes_every_recorded_step_even_with_a_dead_worker():
    server = ParameterServer(np.zeros(3, np.float32))
    client = ServerClient([server], [(0, 3)])
    client.start(["n0"])
    name = SharedParams.segment_name("p" + str(time.time_ns())[-8:], 0)
    shared = SharedParams.create(name, np.zeros(3, np.float32), slots=2)
    try:
        sync = NodeSync("n0", shared, client, np.zeros(3, np.float32), 0, 1000, 0, 3)
        sync.STOP_GRACE_SECONDS = 0.05
        shared.flat += 3  # both workers' steps, none pushed yet (push_every 1000)
        shared.record(0, 4, 40)
        shared.record(1, 6, 60)  # slot 1 then dies: it never marks itself done
        shared.mark_done(0)
        shared.hold = True  # a worker waiting on a held node is let go by the stop
        assert request_stop(name) and shared.stop and shared.wait_while_held() >= 0
        sync.finish()
        assert server.weights()[2:] == (10, 100) and np.allclose(server.w, 3)
        assert "n0" not in server.active
    finally:
        shared.unlink()
        shared.close()
    assert not request_stop(name)  # gone: nothing to stop


def test_train_leaves_at_the_next_step_when_stopped(tmp_path):
    spec, data = _digits_spec(tmp_path)
    model = build(spec, data)
    opt = make_optimizer(spec, model)
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 5

    schedule = make_schedule(spec, opt, 100)
    context = TrainContext(model, opt, schedule, data, epochs=3, batch_size=32, seed=0)
    stats = train(context, [Hooks(should_stop=should_stop)])
    assert stats.stopped and stats.steps == 5 and stats.epochs == 0


def test_epoch_shards_partition_every_epoch():
    parts = [epoch_shard(101, 3, 5, w, 3) for w in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(101))
    assert not np.array_equal(epoch_shard(101, 3, 6, 0, 3), parts[0])


def _round(book: Any, ended: Any, status: str = "ok", **kwargs: Any) -> Any:
    """A round of one worker as :func:`raynn.hogwild.rounds.train_round` returns it."""
    from types import SimpleNamespace

    from raynn.hogwild.rounds import Round
    from raynn.hogwild.worker import worker_row

    record = book.begin(SimpleNamespace(slots=["n0w0"]))
    number = len(book.rounds) - 1
    record.update(start_epoch=0, nodes={"n": [0]}, segments=[f"s{number}"], startup_seconds=1.0)
    row = worker_row(worker="n0w0", node="n", slot=0, role="sync", core=0, threads=1, start=0.0)
    row.update(status=status, round=number)
    return Round(ended, rows=[row], record=record, **kwargs)


def test_rounds_end_typed_and_the_book_replans_until_its_budget_is_spent(tmp_path):
    from types import SimpleNamespace

    from raynn.hogwild.ray_run import RoundBook
    from raynn.hogwild.round_workers import WorkerFailure
    from raynn.hogwild.rounds import RoundEnd
    from raynn.placement.restarts import RestartPolicy

    book = RoundBook(tmp_path, 0, SimpleNamespace(rows=[]), RestartPolicy.for_rounds(1))
    died = WorkerFailure("n0w0", "its process was killed", died=True)
    assert book.keep(_round(book, RoundEnd.WORKER_DIED, "restarted", failure=died))
    joined = _round(book, RoundEnd.NODES_JOINED, "restarted", joined=["node-b"])
    assert joined.restartable and book.keep(joined)  # a join costs no restart
    assert not book.keep(_round(book, RoundEnd.WORKER_DIED, "restarted", failure=died))
    error = "worker n0w0 failed: its process was killed"
    assert book.fields["error"] == f"{error} (after 1 restart(s))"
    assert book.rounds[0]["error"] == error and book.rounds[1]["ended"] == "node(s) joined: node-b"
    # the last round's rows fail with the run; the earlier rounds' stay restarted
    assert [r["status"] for r in book.rows] == ["restarted", "restarted", "failed"]
    assert book.fields["segments"] == ["s0"] and book.fields["workers"] == 1
    assert len(pd.read_parquet(tmp_path / "hogwild" / "part-0.parquet")) == 3

    failed = RoundBook(tmp_path, 1, SimpleNamespace(rows=[]), RestartPolicy.for_rounds(3))
    raised = WorkerFailure("n0w0", "TrainingError: loss became nan", died=False)
    assert not failed.keep(_round(failed, RoundEnd.WORKER_FAILED, "failed", failure=raised))
    assert failed.fields["error"] == "worker n0w0 failed: TrainingError: loss became nan"
    assert failed.policy.restarts == 0


def test_an_interrupted_round_is_recorded_and_its_interrupt_kept_not_raised(tmp_path):
    from types import SimpleNamespace

    from raynn.hogwild.ray_run import RoundBook
    from raynn.hogwild.rounds import RoundEnd
    from raynn.placement.restarts import RestartPolicy

    book = RoundBook(tmp_path, 0, SimpleNamespace(rows=[]), RestartPolicy.for_rounds(1))
    assert book.keep(_round(book, RoundEnd.NODES_JOINED, "restarted", joined=["b"]))
    interrupt = KeyboardInterrupt()
    r = _round(book, RoundEnd.INTERRUPTED, interrupt=interrupt)
    r.rows = []  # an interrupted round reports no rows
    assert not book.keep(r) and book.interrupt is interrupt
    # its entry keeps what it set up; the attempt's rows are the rounds' before it
    assert book.rounds[1]["segments"] == ["s1"] and len(book.rows) == 1


def test_an_interrupted_attempt_records_its_outcome_then_raises_the_interrupt(
    tmp_path, monkeypatch
):
    import raynn.hogwild.runner as runner
    from raynn.hogwild.prepare import Outcome
    from raynn.hogwild.worker import worker_row

    row = worker_row(
        worker="serial", node="n", slot=0, role="serial", core=None, threads=1, start=0
    )
    interrupt = KeyboardInterrupt()

    def interrupted(*args: Any) -> Outcome:  # what run_serial / run_ray return on Ctrl-C
        return Outcome([row], [], {"workers": 1, "rounds": [{"segments": ["s"]}]}, interrupt)

    monkeypatch.setattr(runner, "run_serial", interrupted)
    with pytest.raises(KeyboardInterrupt) as caught:
        run(_spec(tmp_path), executor="serial", progress=False)
    assert caught.value is interrupt
    run_dir = caught.value.run_dir  # what the CLI's message names
    attempt = json.loads((run_dir / "run.json").read_text())["runs"][-1]
    assert attempt["status"] == "interrupted" and "signal" not in attempt
    assert attempt["workers"] == 1 and attempt["rounds"] == [{"segments": ["s"]}]
    assert pd.read_parquet(run_dir / "hogwild")["worker"].tolist() == ["serial"]


# -- runs -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    spec = _spec(tmp_path_factory.mktemp("serial"))
    return run(spec, executor="serial", threads=1, progress=False)


@pytest.fixture(scope="module")
def ray_run(ray_local, tmp_path_factory):
    # the run trains for under a second when idle: sample often enough to see its workers
    spec = _spec(tmp_path_factory.mktemp("ray"), hogwild={"sample_interval": 0.02})
    return run(spec, executor="ray", progress=False)


def test_serial_baseline_tables_and_report(serial_run):
    assert serial_run.ok and list(serial_run.jobs["status"]) == ["ok"]
    evals = pd.read_parquet(serial_run.run_dir / "eval")
    assert (
        evals["final"].sum() == 1
        and len(evals.loc[evals["final"], "per_class_accuracy"].iloc[0]) == 10
    )
    assert _final_accuracy(serial_run.run_dir) >= 0.95
    report = (serial_run.run_dir / "report.md").read_text()
    assert "Test accuracy against time" in report and "serial baseline" in report


@pytest.mark.ray
def test_digits_two_workers_reach_target_and_match_serial(ray_run, serial_run):
    result = ray_run
    assert result.ok and len(result.jobs) == 2 and (result.jobs["status"] == "ok").all()
    hogwild, serial = _final_accuracy(result.run_dir), _final_accuracy(serial_run.run_dir)
    assert hogwild >= 0.95, hogwild
    assert abs(hogwild - serial) <= 0.01, (hogwild, serial)


@pytest.mark.ray
def test_ray_run_tables_and_no_segment_left(ray_run):
    result = ray_run
    workers = pd.read_parquet(result.run_dir / "hogwild")
    cpus = sorted(os.sched_getaffinity(0))[:2]  # the node's first two cores
    assert sorted(workers["core"]) == cpus and (workers["threads"] == 1).all()
    assert workers["samples"].sum() == 20 * 1437 and (workers["samples_per_second"] > 0).all()
    sync = workers[workers["role"] == "sync"].iloc[0]
    assert sync["pushes"] > 0 and sum(sync["staleness_hist"]) == sync["pushes"]
    evals = pd.read_parquet(result.run_dir / "eval")
    assert len(evals) >= 2 and evals["version"].is_monotonic_increasing
    util = pd.read_parquet(result.run_dir / "utilization")
    # the sync role's sampler counts its node's worker processes as raynn's own
    assert not util.empty and util["own_percent"].notna().all()
    own = util.groupby("core")["own_percent"].max()
    assert (own[sorted(workers["core"])] > 0).all(), own
    meta = json.loads((result.run_dir / "run.json").read_text())
    # one node, the driver's: the driver evaluated the shared weights as training went
    # (samples grow between evaluations) while the sync role pushed only every
    # checkpoint_seconds and at the end, not every push_every steps
    assert meta["runs"][-1]["rounds"][0]["solo"]
    assert evals["samples"].is_monotonic_increasing and evals["samples"].max() == 20 * 1437
    assert sync["pushes"] < sync["steps"] * 2 / 50
    assert meta["runs"][-1]["servers"][0]["version"] == sync["pushes"]
    own = _own_segments(result.run_dir)
    assert own == set(meta["runs"][-1]["segments"]) and not own & set(list_segments())
    assert "Test accuracy against time" in main_report(result.run_dir)


def main_report(run_dir: Path) -> str:
    """What ``raynn report`` prints: the kind's summary, through the table of kinds."""
    from raynn.api import report

    return report(run_dir).summary


@pytest.mark.ray
def test_workers_share_memory_without_messages(ray_local, tmp_path):
    import ray

    from raynn.hogwild.context import WorkerContext
    from raynn.hogwild.worker import HogwildWorker

    spec, data = _digits_spec(tmp_path)
    init = flatten(build(spec, data))
    name = SharedParams.segment_name("w" + str(time.time_ns())[-8:], 0)
    SharedParams.create(name, init, slots=2).close()  # as the driver does
    server = ParameterServer(init)
    cls = ray.remote(num_cpus=1)(HogwildWorker)
    a, b = (
        cls.remote(
            WorkerContext(
                worker_id=f"w{i}",
                node="n",
                slot=i,
                slots=2,
                index=i,
                workers=2,
                core=None,
                spec=spec,
                segment=name,
                version=0,
                shards=[server],
                bounds=[(0, init.size)],
            ),
            data,
            init,
        )
        for i in range(2)
    )
    try:
        infos = ray.get([a.ready.remote(), b.ready.remote()])
        assert infos[0]["pid"] != infos[1]["pid"] and infos[0]["segment"] == name
        before = ray.get(b.snapshot.remote())
        ray.get(a.step.remote(3))  # a steps; b is told nothing
        after_b, after_a = ray.get([b.snapshot.remote(), a.snapshot.remote()])
        assert not np.array_equal(before, after_b) and np.array_equal(after_a, after_b)
    finally:
        ray.get([a.close.remote(), b.close.remote()])
        for actor in (a, b):
            ray.kill(actor)
        assert unlink_segment(name)
    assert name not in list_segments()


@pytest.mark.ray
def test_failed_run_leaves_no_segment(ray_local, tmp_path):
    spec = _spec(tmp_path, model="tests.helpers:exploding_mlp")
    result = run(spec, executor="ray", progress=False)
    assert result.status == "failed" and (result.jobs["status"] == "failed").all()
    assert result.jobs["error"].str.contains("loss became").any()
    own = _own_segments(result.run_dir)
    assert own and not own & set(list_segments())
    meta = json.loads((result.run_dir / "run.json").read_text())
    assert meta["runs"][-1]["status"] == "failed" and "loss became" in meta["runs"][-1]["error"]
    assert "loss became" in (result.run_dir / "report.md").read_text()


@pytest.mark.ray
def test_server_killed_mid_run_restarts_from_checkpoint(ray_local, tmp_path):
    import ray

    spec = _spec(
        tmp_path,
        training={"epochs": 80},
        hogwild={"push_every": 4, "checkpoint_seconds": 0.1},
    )
    thread, out = _run_in_thread(spec, executor="ray")
    killed = None
    while thread.is_alive() and killed is None:  # until the run ends: no deadline to miss
        ckpts = list((tmp_path / "runs").glob("*/checkpoints/server-0.ckpt"))
        names = [n for n in ray.util.list_named_actors() if n.startswith(SERVER_NAME)]
        if ckpts and names and _still_running(tmp_path / "runs"):
            from raynn.hogwild.checkpoint import read_checkpoint

            version = read_checkpoint(ckpts[0])[1]["version"]
            if version > 0:
                ray.kill(ray.get_actor(names[0]), no_restart=False)
                killed = version
        time.sleep(0.05)
    _join(thread)
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert killed is not None, "the run ended before the server could be killed"
    assert result.ok and (result.jobs["status"] == "ok").all(), result.jobs["error"].tolist()
    server = json.loads((result.run_dir / "run.json").read_text())["runs"][-1]["servers"][0]
    restored = server["restored_from_version"]
    assert restored is not None and restored >= killed, (restored, killed)
    assert server["version"] >= restored and server["restore_error"] is None
    assert _final_accuracy(result.run_dir) >= 0.9


def _still_running(runs: Path) -> bool:
    """Whether the one run under ``runs`` is still training (its attempt says running)."""
    metas = list(runs.glob("*/run.json"))
    if not metas:
        return False
    try:
        return json.loads(metas[0].read_text())["runs"][-1]["status"] == "running"
    except (OSError, ValueError, KeyError, IndexError):
        return False


@pytest.mark.ray
def test_ctrl_c_releases_shared_memory(ray_local, tmp_path):
    spec = _spec(tmp_path, training={"epochs": 200})
    seen: set[str] = set()

    def training() -> bool:
        # training has begun once the driver has written an eval row of it: the segments
        # on the machine then include the run's own (other runs' may come and go)
        if list((tmp_path / "runs").glob("*/eval/part-0.parquet")):
            seen.update(list_segments())
            return True
        return False

    _run_interrupted(CtrlC(training), spec, executor="ray")
    (run_dir,) = (tmp_path / "runs").iterdir()
    attempt = json.loads((run_dir / "run.json").read_text())["runs"][-1]
    assert attempt["status"] == "interrupted"
    # what the interrupted round did is still recorded: its segments, the server's stats
    assert attempt["rounds"] and attempt["rounds"][0]["segments"] and attempt["servers"]
    own = _own_segments(run_dir)
    assert own <= seen, "the run's segments were not there while it trained"
    assert not own & set(list_segments())  # Ctrl-C released them


def test_cli_serial_run_prints_report(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(_raw(tmp_path, training={"epochs": 2})))
    assert main(["run", str(spec), "--serial", "--threads", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "# raynn HOGWILD run" in out and "| elapsed s |" in out
    run_dir = Path(out.strip().splitlines()[-1].split("results: ")[1])
    assert main(["report", str(run_dir), "--no-html"]) == 0
    assert "per-class" in capsys.readouterr().out.lower()


@pytest.mark.ray
def test_seed_api_distributed_trainer_and_tester(ray_local, tmp_path):
    from sklearn.datasets import load_digits
    from torch.utils.data import DataLoader, TensorDataset

    from raynn.compat.hogwild import DistributedTester, DistributedTrainer

    bunch = load_digits()
    x = torch.tensor(bunch.images[:, None] / 16.0, dtype=torch.float32)  # ToTensor-like [0, 1]
    y = torch.tensor(bunch.target)
    train, test = TensorDataset(x[:1400], y[:1400]), TensorDataset(x[1400:], y[1400:])
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    untrained = copy.deepcopy(model)

    def optimizer(m):
        return torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)

    def scheduler(opt):
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[8], gamma=0.1)

    trainer = DistributedTrainer(2, torch.nn.CrossEntropyLoss(), str(tmp_path), batch_size=32)
    result = trainer(model, train, optimizer, scheduler, epochs=10)
    assert result.ok and trainer.spec.optimizer.lr == 0.05
    assert not torch.equal(model[1].weight, untrained[1].weight)
    scores = DistributedTester(DataLoader(test, batch_size=64), str(tmp_path))(model)
    assert scores["accuracy"] >= 0.9 and len(scores["per_class_accuracy"]) == 10
    assert (
        json.loads((tmp_path / "test_results.json").read_text())["accuracy"] == scores["accuracy"]
    )


def test_interrupted_serial_run_resumes_from_the_server_checkpoint(tmp_path):
    spec = _spec(
        tmp_path,
        training={"epochs": 60, "eval_every_seconds": 0.05},
        hogwild={"checkpoint_seconds": 0.05},
    )

    def past_epoch_2() -> bool:
        return _checkpointed_samples(tmp_path / "runs") > 2 * 1437

    _run_interrupted(CtrlC(past_epoch_2), spec, executor="serial", threads=1)
    (run_dir,) = (tmp_path / "runs").iterdir()
    # through the CLI, as a user would: the run directory says it is a HOGWILD run
    assert (
        main(["run", "--resume", str(run_dir), "--serial", "--threads", "1", "--no-progress"]) == 0
    )
    meta = json.loads((run_dir / "run.json").read_text())
    assert [r["status"] for r in meta["runs"]] == ["interrupted", "completed"]
    assert 0 < meta["runs"][1]["start_epoch"] < 60
    evals = pd.read_parquet(run_dir / "eval")
    # the resumed run redoes the epoch it was in: no sample of the 60 epochs is missing
    assert set(evals["attempt"]) == {0, 1} and evals["samples"].max() >= 60 * 1437
    assert _final_accuracy(run_dir) >= 0.95


def test_seed_api_accepts_optimizer_and_scheduler_objects_serially(tmp_path):
    from torch.utils.data import TensorDataset

    from raynn.compat.hogwild import DistributedTester, DistributedTrainer

    spec, data = _digits_spec(tmp_path)
    x = torch.from_numpy(data.x_train.astype(np.float32))  # 0..255 floats: rescaled once
    train = TensorDataset(x, torch.from_numpy(data.y_train))
    test = [(torch.from_numpy(data.x_test.astype(np.float32)), torch.from_numpy(data.y_test))]
    model = build(spec, data)
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    trainer = DistributedTrainer(1, None, str(tmp_path), batch_size=32)
    result = trainer(model, train, opt, sched, epochs=6, executor="serial", threads=1)
    assert (
        result.ok and trainer.spec.optimizer.lr == 0.03 and trainer.spec.optimizer.momentum == 0.9
    )
    assert DistributedTester(test, str(tmp_path))(model)["accuracy"] >= 0.9


def _hogwild_worker_pids() -> list[int]:
    """Processes running a HOGWILD worker actor (Ray titles them ``ray::HogwildWorker...``)."""
    import psutil

    pids = []
    for proc in psutil.Process().children(recursive=True):  # this test's Ray only
        try:
            if " ".join(proc.cmdline()).startswith("ray::HogwildWorker"):
                pids.append(proc.pid)
        except psutil.Error:
            pass
    return pids


def _checkpointed_samples(runs: Path) -> int:
    from raynn.hogwild.checkpoint import read_checkpoint

    for ckpt in runs.glob("*/checkpoints/server-0.ckpt"):
        try:
            return int(read_checkpoint(ckpt)[1]["samples"])
        except Exception:  # noqa: BLE001 - being replaced right now
            return 0
    return 0


class CtrlC:
    """Ctrl-C for a run in this (the main) thread: a watcher thread calls
    ``_thread.interrupt_main()`` once ``ready()`` is true. It waits on the run, not on a
    deadline, so a slow start under load cannot make it give up before the run ends."""

    previous: Any = None

    def __init__(self, ready: Any) -> None:
        self.ready = ready
        self.ended = threading.Event()
        self.fired: float | None = None  # seconds after the start
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        t0 = time.monotonic()
        while not self.ended.is_set():
            if self.ready():
                self.fired = time.monotonic() - t0
                _thread.interrupt_main()
                return
            self.ended.wait(0.01)

    def __enter__(self) -> CtrlC:
        # a process started in the background of a script inherits SIGINT ignored, and
        # interrupt_main() then does nothing: give it Python's own handler, as a terminal has
        self.previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.ended.set()
        self.thread.join()
        signal.signal(signal.SIGINT, self.previous)


def _run_interrupted(ctrl_c: CtrlC, spec: HogwildSpec, **kwargs: Any) -> None:
    """Run ``spec`` here until ``ctrl_c`` presses Ctrl-C; fail, saying why, if it ends first."""
    t0 = time.monotonic()
    try:
        with ctrl_c:
            run(spec, progress=False, **kwargs)
    except KeyboardInterrupt:
        return
    pressed = "never pressed" if ctrl_c.fired is None else f"pressed at {ctrl_c.fired:.1f} s"
    pytest.fail(
        f"the run ended after {time.monotonic() - t0:.1f} s without a KeyboardInterrupt "
        f"(Ctrl-C {pressed})"
    )


def _run_in_thread(spec: HogwildSpec, **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = run(spec, progress=False, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's assertion
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


def _join(thread: threading.Thread) -> None:
    """Wait for a run's thread to end: the test's own timeout (pytest-timeout) bounds the
    wait, not a guess of how long a run takes on a loaded machine."""
    thread.join()


@pytest.mark.ray
def test_killed_worker_is_replaced_and_the_run_completes(ray_local, tmp_path):
    import os
    import signal

    import psutil

    spec = _spec(
        tmp_path,
        training={"epochs": 60, "eval_every_seconds": 0.1},
        hogwild={"checkpoint_seconds": 0.1},
    )
    thread, out = _run_in_thread(spec, executor="ray")
    killed = None
    while thread.is_alive() and killed is None:  # until the run ends: no deadline to miss
        pids = _hogwild_worker_pids()
        running = _still_running(tmp_path / "runs")
        if len(pids) == 2 and running and _checkpointed_samples(tmp_path / "runs") > 3 * 1437:
            # the worker on the higher core, not the node's sync role (slot 0, lowest core)
            victim = max(pids, key=lambda pid: max(psutil.Process(pid).cpu_affinity()))
            os.kill(victim, signal.SIGKILL)  # a crash, not a polite stop
            killed = victim
        time.sleep(0.02)
    _join(thread)
    assert "error" not in out, out.get("error")
    assert killed is not None, "the run ended before a worker could be killed"
    result = out["result"]
    assert result.ok, result.jobs[["worker", "status", "error"]]
    meta = json.loads((result.run_dir / "run.json").read_text())["runs"][-1]
    rounds = meta["rounds"]
    assert len(rounds) == 2 and "failed" in rounds[0]["error"] and "error" not in rounds[1]
    assert rounds[1]["workers"] == 2 and 0 < rounds[1]["start_epoch"] < 60
    workers = pd.read_parquet(result.run_dir / "hogwild")
    first, second = workers[workers["round"] == 0], workers[workers["round"] == 1]
    assert (first["status"] == "restarted").any() and (second["status"] == "ok").all()
    # the survivor, the sync role, left at its next step and pushed the node's rest: every
    # step the killed worker had recorded in the segment reached the server too
    survivor = first[first["role"] == "sync"].iloc[0]
    assert survivor["steps"] > 0 and survivor["error"] == "stopped: worker n0w1 failed"
    pushed = rounds[1]["start_samples"] - rounds[0]["start_samples"]
    assert pushed >= first["samples"].sum() > 0, (pushed, first[["worker", "samples"]])
    # nothing is lost but the killed worker's unpushed steps: every epoch still runs
    evals = pd.read_parquet(result.run_dir / "eval")
    assert evals["samples"].max() >= 60 * 1437 and _final_accuracy(result.run_dir) >= 0.95
    assert evals["samples"].nunique() >= 4  # evaluated along the way, from the shared weights
    # each round had its own segment; both are gone
    used = set(rounds[0]["segments"]) | set(rounds[1]["segments"])
    assert len(used) == 2 and not used & set(list_segments())


def test_resumed_schedule_continues_where_it_left_off():
    from raynn.core.optim import cosine

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ran = cosine(opt, 10, 5)
    for _ in range(4):
        opt.step()
        ran.after_epoch(0.0)
    opt2 = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    skipped = cosine(opt2, 10, 5)
    skipped.skip([5] * 4)
    assert opt.param_groups[0]["lr"] < 0.1
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
