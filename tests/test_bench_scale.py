"""``raynn bench scale``: the simulation drives the real queue on a simulated clock; its
makespans are checked against schedules worked out by hand."""

from __future__ import annotations

import dataclasses

import pytest

from raynn.bench.scale import draw_jobs, lower_bound, pair_bound, simulate, vary
from raynn.kfold.runner import prepare
from tests.conftest import make_spec


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return prepare(make_spec(tmp_path_factory.mktemp("scale"), folds=2, models=["mlp"])).jobs[0]


def _jobs(base, costs, epochs=1, max_threads=1):
    training = dataclasses.replace(base.training, epochs=epochs)
    jobs = [
        dataclasses.replace(
            base, job_id=f"j{i}", index=i, cost=float(c), training=training, max_threads=max_threads
        )
        for i, c in enumerate(costs)
    ]
    return sorted(jobs, key=lambda j: -j.cost)


FLAT = {"mlp": {1: 1.0, 2: 1.0}}  # a second thread gains nothing


@pytest.mark.timeout(60)
def test_equal_jobs_fill_the_cores_exactly(base):
    sim = simulate(_jobs(base, [10] * 4), FLAT, cores=2, node_cores=2)
    assert sim.makespan_s == 20.0 and sim.bound_s == 20.0 and sim.efficiency == 1.0
    assert sim.queue_calls == 4 + 4 * 2 + 2  # 4 grants, 4 x (progress + complete), 2 retires


@pytest.mark.timeout(60)
def test_longest_first_on_two_cores_matches_the_hand_schedule(base):
    # 3 and 3 start at 0; the 2s at 3, 3 and 5: makespan 7; bound max(3, 12 / 2) = 6
    sim = simulate(_jobs(base, [2, 3, 2, 3, 2]), FLAT, cores=2, node_cores=2)
    assert sim.makespan_s == 7.0 and sim.bound_s == 6.0
    assert sim.efficiency == pytest.approx(6 / 7)


@pytest.mark.timeout(60)
def test_three_long_jobs_on_two_cores_take_two_of_them_back_to_back(base):
    # total / cores = 15 s, but two of the three 10 s jobs share a core: 20 s at best
    jobs = _jobs(base, [10, 10, 10])
    assert lower_bound(jobs, FLAT, 2) == 15.0 and pair_bound(jobs, FLAT, 2) == 20.0
    sim = simulate(jobs, FLAT, cores=2, node_cores=2)
    assert (sim.makespan_s, sim.bound_s, sim.pair_bound_s) == (20.0, 15.0, 20.0)
    assert sim.efficiency == 0.75 and sim.pair_efficiency == 1.0
    assert pair_bound(jobs[:2], FLAT, 2) == 0.0  # no more jobs than cores


@pytest.mark.timeout(60)
def test_tail_widening_gives_the_last_job_the_free_core(base):
    # one 2-epoch job of 10 s at one thread, twice as fast at two: epoch 1 takes 5 s, then
    # the idle worker's core is free (it retired) and epoch 2 takes 2.5 s on two
    scaling = {"mlp": {1: 1.0, 2: 2.0}}
    jobs = _jobs(base, [10], epochs=2, max_threads=2)
    wide = simulate(jobs, scaling, cores=2, node_cores=2, tail_widening=True)
    narrow = simulate(jobs, scaling, cores=2, node_cores=2, tail_widening=False)
    assert (wide.makespan_s, wide.widened) == (7.5, 1)
    assert (narrow.makespan_s, narrow.widened) == (10.0, 0)
    assert lower_bound(jobs, scaling, 2) == 5.0  # the job at its two useful threads


@pytest.mark.timeout(60)
def test_the_bound_holds_when_a_probe_measured_more_than_linear_speed_up(base):
    # 12 s at one thread, 4 s at two (a loaded probe's noise): 8 core-seconds, not 12
    jobs = _jobs(base, [12], max_threads=2)
    assert lower_bound(jobs, {"mlp": {1: 1.0, 2: 3.0}}, 2) == 4.0


@pytest.mark.timeout(60)
def test_jobs_on_separate_nodes_do_not_share_cores(base):
    # 2 nodes of 1 core: the same as 2 cores for one-core jobs
    sim = simulate(_jobs(base, [2, 3, 2, 3, 2]), FLAT, cores=2, node_cores=1)
    assert sim.makespan_s == 7.0


@pytest.mark.timeout(60)
def test_varied_jobs_take_their_own_factor_whatever_the_order(base):
    jobs = _jobs(base, [1, 5, 3])
    forward, backward = vary(jobs, 0.5, seed=1), vary(jobs[::-1], 0.5, seed=1)
    assert [j.cost for j in forward] == [j.cost for j in backward[::-1]]
    assert [j.cost for j in forward] != [j.cost for j in jobs]
    assert vary(jobs, 0.0) == jobs


@pytest.mark.timeout(60)
def test_drawn_jobs_have_unique_ids_and_come_longest_first(base):
    drawn = draw_jobs(_jobs(base, [1, 5, 3]), 50, seed=3)
    assert len({j.job_id for j in drawn}) == 50
    assert [j.cost for j in drawn] == sorted((j.cost for j in drawn), reverse=True)
    assert {j.cost for j in drawn} <= {1.0, 3.0, 5.0}


@pytest.mark.timeout(120)
def test_the_command_writes_a_row_per_core_count_order_and_policy(tmp_path, capsys):
    import copy

    import pandas as pd
    import yaml

    from raynn.cli import main
    from tests.conftest import TINY

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(copy.deepcopy(TINY)))
    out = tmp_path / "bench"
    args = ["bench", "scale", "--spec", str(spec), "--jobs-per-core", "2", "--node-cores", "4"]
    assert main([*args, "--cores", "4,8", "--noise", "0,0.1", "--output", str(out)]) == 0
    table = pd.read_csv(next(out.glob("scale_*/scale.csv")))
    assert table[["cores", "jobs"]].values.tolist() == [[4, 8]] * 8 + [[8, 16]] * 8
    assert table["tail_widening"].tolist() == [False, True] * 8
    orders = ["longest_first"] * 2 + ["planned"] * 2
    assert table["order"].tolist() == orders * 4
    assert table["noise"].tolist() == ([0.0] * 4 + [0.1] * 4) * 2
    assert (table[table["order"] == "longest_first"]["plan_s"] == 0).all()
    # a bound holds whatever the probe measured (a float sum may end a hair below it)
    for col in ("efficiency", "pair_efficiency"):
        assert ((table[col] > 0) & (table[col] <= 1 + 1e-9)).all(), table[col]
    assert "efficiency = bound_s / makespan_s" in capsys.readouterr().out
    for bad in (["--cores", "many"], ["--noise", "0,-1"], ["--noise", "nan"]):
        assert main([*args, *bad]) == 2
        assert capsys.readouterr().err.strip().count("\n") == 0  # one line
