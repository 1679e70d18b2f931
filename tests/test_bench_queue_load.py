"""``raynn bench scale --queue-workers``: the real queue actor under worker loops run as
threads; every job goes out exactly once, and the rows are sane (no assertions on speed)."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import yaml

from raynn.bench.queue_load import LoopRunner, check_handed, measure
from raynn.bench.queue_load_summary import summarize
from raynn.bench.scale import draw_jobs
from raynn.kfold.runner import prepare
from tests.conftest import TINY, make_spec


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return prepare(make_spec(tmp_path_factory.mktemp("queue_load")))


def _sane(row) -> None:
    assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    assert row["seconds"] > 0 and row["jobs_per_s"] > 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("prefetch", [1, 16])
def test_every_job_goes_out_exactly_once_to_eight_threaded_workers(ray_local, plan, prefetch):
    jobs = draw_jobs(plan.jobs, 200)
    pool = [ray_local.remote(num_cpus=0)(LoopRunner).remote() for _ in range(2)]
    try:
        row, handed = measure(jobs, plan.spec.scheduling, pool, workers=8, prefetch=prefetch)
    finally:
        for runner in pool:
            ray_local.kill(runner)
    assert sorted(handed) == sorted(j.job_id for j in jobs)
    check_handed(jobs, handed)
    assert (row.workers, row.prefetch, row.runners, row.nodes, row.jobs) == (8, prefetch, 2, 1, 200)
    if prefetch == 1:
        assert row.calls >= 200 + 8  # a first lease each, a finish per job
    else:  # batches: the first 1 + (199 // 16) = 13 jobs of a lease go out in one call
        assert row.calls < 200
    _sane(vars(row))


@pytest.mark.timeout(120)
def test_the_command_writes_a_row_per_worker_count(ray_local, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(copy.deepcopy(TINY)))
    out = tmp_path / "bench"
    from raynn.cli import main

    args = ["bench", "scale", "--spec", str(spec), "--queue-jobs", "200", "--queue-runners", "2"]
    assert main([*args, "--queue-workers", "8,16", "--output", str(out)]) == 0
    assert ray_local.is_initialized()  # the Ray it found up is left up
    table = pd.read_csv(next(out.glob("queue_*/queue_load.csv")))
    assert table["workers"].tolist() == [8, 8, 16, 16] and set(table["jobs"]) == {200}
    assert table["prefetch"].tolist() == [1, 32, 1, 32]  # the default: with and without
    assert table["nodes"].tolist() == [1, 1, 2, 2]
    for _, row in table.iterrows():
        _sane(row)
    printed = capsys.readouterr().out
    assert "jobs/s at every worker count" in printed and "threads of" in printed
    assert main([*args, "--queue-workers", "many"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0  # one line
    assert main([*args, "--queue-workers", "8", "--queue-prefetch", "0"]) == 2
    assert "--queue-prefetch" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_a_job_handed_out_twice_or_never_is_an_error(plan):
    jobs = plan.jobs[:3]
    check_handed(jobs, [j.job_id for j in jobs])
    with pytest.raises(RuntimeError, match="1 job.* more than once .* and 1 never"):
        check_handed(jobs, [jobs[0].job_id, jobs[0].job_id, jobs[1].job_id])


@pytest.mark.timeout(60)
def test_repeats_are_summarized_as_medians_with_their_spread():
    run = {"runners": 1, "nodes": 1, "jobs": 10, "seconds": 1.0, "calls": 18, "waits": 0}
    lat = {"p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0}
    runs = pd.DataFrame(
        [
            {"repeat": r, "workers": w, "prefetch": 1, "jobs_per_s": rate, **run, **lat}
            for r, w, rate in [(0, 8, 1000.0), (0, 32, 3000.0), (1, 8, 3000.0), (1, 32, 2500.0)]
        ]
    )
    table = summarize(runs)
    assert table["workers"].tolist() == [8, 32]
    assert table["repeats"].tolist() == [2, 2]
    assert table["jobs_per_s"].tolist() == [2000.0, 2750.0]
    assert table["jobs_per_s_min"].tolist() == [1000.0, 2500.0]
    assert table["jobs_per_s_max"].tolist() == [3000.0, 3000.0]
    assert table["bar_met"].tolist() == [True, True]
