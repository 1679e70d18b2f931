"""The model probe: thread scaling, calibrated costs, auto group size."""

from __future__ import annotations

from raynn.kfold import prepare
from raynn.scheduler.probe import auto_group_size, calibrate, predicted_makespan, useful_threads
from tests.conftest import make_spec


def test_useful_threads_needs_a_real_gain():
    assert useful_threads({1: 100.0, 2: 110.0, 4: 120.0}) == 1
    assert useful_threads({1: 100.0, 2: 180.0, 4: 200.0}) == 2
    assert useful_threads({1: 100.0, 2: 180.0, 4: 330.0}) == 4


def test_calibrate_orders_by_measured_cost(tmp_path):
    spec = make_spec(tmp_path, models=["mlp", "lenet"], schedulers=["cosine", "warm"])
    plan = prepare(spec)
    jobs, speeds = calibrate(plan.jobs, plan.data, cores=2)
    assert set(speeds) == {"mlp", "lenet"} and all(set(s) == {1, 2} for s in speeds.values())
    assert [j.cost for j in jobs] == sorted((j.cost for j in jobs), reverse=True)
    assert all(j.cost > 0 and j.max_threads in (1, 2) for j in jobs)
    assert sorted(j.job_id for j in jobs) == sorted(j.job_id for j in plan.jobs)


def test_auto_group_size_prefers_packing_when_threads_do_not_scale(tmp_path):
    plan = prepare(make_spec(tmp_path, folds=4, models=["mlp"]))
    jobs, _ = calibrate(plan.jobs, plan.data, cores=1)
    flat = {"mlp": {1: 100.0, 2: 105.0, 4: 110.0}}
    scaling = {"mlp": {1: 100.0, 2: 200.0, 4: 400.0}}
    assert auto_group_size(jobs, flat, cores=4) == 1
    assert predicted_makespan(jobs, scaling, 4, 4) < predicted_makespan(jobs, flat, 4, 4)
    assert auto_group_size(jobs[:1], scaling, cores=4) == 4  # one job: give it every core
