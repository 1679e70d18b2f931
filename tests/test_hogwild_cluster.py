"""HOGWILD on two raylets (ray.cluster_utils.Cluster): both nodes train and sync."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from raynn.hogwild.runner import run
from raynn.hogwild.shared_params import list_segments
from tests.test_hogwild import _final_accuracy, _own_segments, _spec

pytestmark = pytest.mark.ray


def test_two_nodes_train_sync_and_meet_the_target(two_nodes, tmp_path):
    spec = _spec(tmp_path, hogwild={"max_staleness": 1, "push_every": 10, "server_shards": 2})
    result = run(spec, executor="ray", address=two_nodes.address, progress=False)
    assert result.ok, result.jobs[["worker", "status", "error"]]
    workers = pd.read_parquet(result.run_dir / "hogwild")
    # one worker per node, each the sync role of its own node's shared memory
    assert workers["node"].nunique() == 2 and (workers["role"] == "sync").all()
    assert (workers["steps"] > 0).all() and (workers["pushes"] > 0).all()
    meta = json.loads((result.run_dir / "run.json").read_text())["runs"][-1]
    assert len(meta["segments"]) == 2
    server = meta["servers"][0]
    assert server["version"] == workers["pushes"].sum() and server["version"] > 2
    # the weights are sharded over two server actors that apply every push
    shard = meta["servers"][1]
    assert shard["lo"] == server["numel"] and shard["version"] == server["version"]
    # staleness is recorded per push, and the stale-synchronous bound holds
    hist = workers["staleness_hist"].map(list)
    assert sum(sum(h) for h in hist) == server["version"]
    assert (workers["staleness_max"] <= 1).all() and (workers["staleness_max"] >= 1).any()
    assert set(server["staleness"]) == set(workers["node"])
    assert _final_accuracy(result.run_dir) >= 0.95
    own = _own_segments(result.run_dir)  # not every raynn_hw_* on the machine: its own
    assert own == set(meta["segments"]) and not own & set(list_segments())


def test_a_node_removed_mid_run_costs_only_its_unpushed_steps(two_nodes, tmp_path):
    from tests.test_hogwild import _checkpointed_samples, _join, _run_in_thread

    extra = two_nodes.add_node(num_cpus=1)
    two_nodes.wait_for_nodes()
    spec = _spec(
        tmp_path,
        training={"epochs": 60, "eval_every_seconds": 0.1},
        hogwild={"checkpoint_seconds": 0.1, "push_every": 10},
    )
    thread, out = _run_in_thread(spec, executor="ray", address=two_nodes.address)
    removed = False
    while thread.is_alive() and not removed:  # until the run ends: no deadline to miss
        if _checkpointed_samples(tmp_path / "runs") > 3 * 1437:
            two_nodes.remove_node(extra)
            removed = True
        time.sleep(0.02)
    _join(thread)
    assert "error" not in out, out.get("error")
    assert removed, "the run ended before the node could be removed"
    result = out["result"]
    assert result.ok, result.jobs[["worker", "status", "error"]]
    rounds = json.loads((result.run_dir / "run.json").read_text())["runs"][-1]["rounds"]
    assert len(rounds) == 2 and len(rounds[0]["nodes"]) == 3 and len(rounds[1]["nodes"]) == 2
    lost = set(rounds[0]["nodes"]) - set(rounds[1]["nodes"])
    workers = pd.read_parquet(result.run_dir / "hogwild")
    assert len(lost) == 1 and not (workers[workers["round"] == 1]["node"].isin(lost)).any()
    assert (workers[workers["round"] == 1]["status"] == "ok").all()
    evals = pd.read_parquet(result.run_dir / "eval")
    assert evals["samples"].max() >= 60 * 1437 and _final_accuracy(result.run_dir) >= 0.95


def test_a_node_that_joins_mid_run_gets_workers(two_nodes, tmp_path):
    from tests.test_hogwild import _checkpointed_samples, _join, _run_in_thread

    spec = _spec(
        tmp_path,
        training={"epochs": 150, "eval_every_seconds": 0.2},
        hogwild={"checkpoint_seconds": 0.1, "push_every": 10},
    )
    before = len(two_nodes.list_all_nodes())
    thread, out = _run_in_thread(spec, executor="ray", address=two_nodes.address)
    joined = None
    while thread.is_alive() and joined is None:  # until the run ends: no deadline to miss
        if _checkpointed_samples(tmp_path / "runs") > 3 * 1437:
            joined = two_nodes.add_node(num_cpus=1)
        time.sleep(0.02)
    _join(thread)
    try:
        assert "error" not in out, out.get("error")
        assert joined is not None, "the run ended before a node could join"
        result = out["result"]
        assert result.ok, result.jobs[["worker", "status", "error"]]
        rounds = json.loads((result.run_dir / "run.json").read_text())["runs"][-1]["rounds"]
        assert len(rounds[0]["nodes"]) == before and "joined" in rounds[0]["ended"]
        assert len(rounds[-1]["nodes"]) == before + 1 and "error" not in rounds[-1]
        workers = pd.read_parquet(result.run_dir / "hogwild")
        first = workers[workers["round"] == 0]
        # the join stopped every worker still training (one that had finished its share is
        # ok); each node pushed all it had, so the next round starts with every sample
        stopped = first[first["status"] == "restarted"]
        assert len(stopped) and (stopped["steps"] > 0).all() and (stopped["epochs"] < 150).all()
        assert (first[first["status"] == "ok"]["epochs"] == 150).all(), first.to_string()
        pushed = rounds[1]["start_samples"] - rounds[0]["start_samples"]
        assert pushed == first["samples"].sum(), (pushed, first[["worker", "samples"]])
        last = workers[workers["round"] == len(rounds) - 1]
        assert len(last) == before + 1 and (last["status"] == "ok").all()
        assert (last["steps"] > 0).all() and (last["pushes"] > 0).all()
        evals = pd.read_parquet(result.run_dir / "eval")
        assert evals["samples"].max() >= 150 * 1437 and _final_accuracy(result.run_dir) >= 0.95
    finally:
        if joined is not None:
            two_nodes.remove_node(joined)
