"""Two raylets on one machine (ray.cluster_utils.Cluster): jobs spread over both nodes."""

from __future__ import annotations

import pandas as pd
import pytest

from raynn.kfold.executors.ray_executor import RayExecutor
from raynn.kfold.runner import run
from tests.conftest import make_spec

pytestmark = pytest.mark.ray


def test_jobs_run_on_both_nodes(two_nodes, tmp_path):
    spec = make_spec(tmp_path, schedulers=["cosine", "warm"])
    result = run(spec, executor=RayExecutor(address=two_nodes.address), progress=False)
    jobs = pd.read_parquet(result.run_dir / "jobs")
    assert result.ok and len(jobs) == 8 and (jobs["status"] == "ok").all()
    assert jobs["node"].nunique() == 2, jobs["node"].tolist()
    # the two raylets share this machine's CPUs: each got its own core
    cores = jobs.groupby("node")["cores"].agg(lambda c: {tuple(x) for x in c})
    assert all(len(c) == 1 for c in cores) and len({next(iter(c)) for c in cores}) == 2
    util = pd.read_parquet(result.run_dir / "utilization")
    assert util["node"].nunique() == 2
