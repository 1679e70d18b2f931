"""HOGWILD on two raylets (ray.cluster_utils.Cluster): both nodes train and sync."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from raynn.hogwild.runner import run
from raynn.hogwild.shared_params import list_segments
from tests.test_hogwild import _final_accuracy, _spec

pytestmark = pytest.mark.ray


def test_two_nodes_train_sync_and_meet_the_target(two_nodes, tmp_path):
    before = set(list_segments())
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
    assert set(list_segments()) <= before
