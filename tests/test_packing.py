"""The planned run order (:mod:`raynn.kfold.packing`): packings and makespans worked out by
hand, and the real queue (through the scale simulation) keeping the plan."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from raynn.bench.scale import simulate
from raynn.kfold.executors.base import Executor
from raynn.kfold.packing import classes, lpt_makespan, pack, planned_order, run_order
from raynn.kfold.runner import prepare
from tests.conftest import make_spec

FLAT = {"mlp": {1: 1.0, 2: 1.0}}  # seconds = cost at any thread count


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return prepare(make_spec(tmp_path_factory.mktemp("pack"), folds=2, models=["mlp"])).jobs[0]


def _jobs(base, costs, cores=0):
    one = dataclasses.replace(base.training, epochs=1)
    jobs = [
        dataclasses.replace(
            base, job_id=f"j{i}", index=i, cost=float(c), cores=cores, training=one, max_threads=1
        )
        for i, c in enumerate(costs)
    ]
    return sorted(jobs, key=lambda j: (-j.cost, j.index))


def _cost(job):
    return job.cost


@pytest.mark.timeout(60)
def test_lpt_makespan_of_the_textbook_case():
    # 3 and 3 at 0, then 2s at 3, 3 and 5: 7 (the best is 3 + 3 and 2 + 2 + 2: 6)
    assert lpt_makespan([3, 3, 2, 2, 2], 2) == 7.0
    assert lpt_makespan([4, 1], 3) == 4.0


@pytest.mark.timeout(60)
def test_pack_spreads_jobs_worst_fit_and_keeps_long_ones_off_the_reserve():
    # worst fit: 3 | 3, then 2 | 2, and the last 2 finds 1 s of room in each bin
    assert pack([3, 3, 2, 2, 2], 2, 6.0) is None
    # one bin reserved from the 3s: both 3s in bin A (at 0 and 3), the 2s in bin B
    assert pack([3, 3, 2, 2, 2], 2, 6.0, reserve=1, long=3) == [0.0, 3.0, 0.0, 2.0, 4.0]
    assert pack([0.1] * 10, 1, 1.0) is not None  # ten float tenths fill a bin of 1 exactly


@pytest.mark.timeout(60)
def test_lengths_within_five_percent_are_one_class():
    assert classes([8.61, 8.6, 3.39, 3.38, 0.26]) == [8.6, 3.38, 0.26]
    assert classes([10, 9.6, 9.1]) == [9.6, 9.1]  # 9.1 is more than 5% below 10


@pytest.mark.timeout(60)
def test_the_textbook_case_is_planned_to_its_best(base):
    # longest first: 7; planned: 3 and 2 at 0, 2 at 2, 3 at 3, 2 at 4: 6
    jobs = _jobs(base, [3, 3, 2, 2, 2])
    order = planned_order(jobs, _cost, 2)
    assert [j.cost for j in order] == [3, 2, 2, 3, 2]
    assert simulate(order, FLAT, cores=2, node_cores=2).makespan_s == 6.0


@pytest.mark.timeout(60)
def test_the_planned_order_beats_longest_first_through_the_real_queue(base):
    # 4 jobs of 10 and 5 of 4 on 3 cores. Longest first: 10, 10, 10 at 0; at 10 the last 10
    # and two 4s; 4s at 14, 14, 18: 22. Planned (bins of 20, worst fit, one kept from the
    # 10s): two bins of 10 + 10, one of five 4s, handed out by start: 10, 10, 4 at 0; 4 at
    # 4, 8; 10, 10 at 10; 4 at 12, 16: 20
    jobs = _jobs(base, [10, 10, 10, 10, 4, 4, 4, 4, 4])
    order = planned_order(jobs, _cost, 3)
    assert [j.cost for j in order] == [10, 10, 4, 4, 4, 10, 10, 4, 4]
    assert simulate(jobs, FLAT, cores=3, node_cores=3).makespan_s == 22.0
    assert simulate(order, FLAT, cores=3, node_cores=3).makespan_s == 20.0


@pytest.mark.timeout(60)
def test_jobs_stay_longest_first_where_no_plan_is_shorter(base):
    equal = _jobs(base, [5] * 6)  # longest first is already at the bound: 15
    assert planned_order(equal, _cost, 2) == equal
    few = _jobs(base, [9, 1])  # no more jobs than workers
    assert planned_order(few, _cost, 2) == few
    # 3 jobs of 10 on 2 cores: 20 is the best (two share a core), as longest first does
    three = _jobs(base, [10, 10, 10, 1])
    assert planned_order(three, _cost, 2) == three


@pytest.mark.timeout(60)
def test_a_run_plans_jobs_of_one_size_on_its_core_groups_only(base):
    jobs = _jobs(base, [10, 10, 10, 10, 4, 4, 4, 4, 4])
    planned = run_order(jobs, FLAT, 1, lambda need: 3 // need)
    assert [j.cost for j in planned] == [10, 10, 4, 4, 4, 10, 10, 4, 4]
    # groups of 2 cores on 6: the same 3 workers, each job on 2 threads
    assert run_order(jobs, FLAT, 2, lambda need: 6 // need) == planned
    mixed = [dataclasses.replace(j, cores=1 + (j.cost == 4)) for j in jobs]
    assert run_order(mixed, FLAT, 1, lambda need: 3 // need) == mixed  # two sizes: as given


@pytest.mark.timeout(60)
def test_an_executor_counts_the_core_groups_of_its_domains():
    executor = SimpleNamespace(domain_sizes=[7, 4], max_workers=None)
    assert Executor.slots(executor, 2) == 3 + 2
    assert Executor.slots(SimpleNamespace(domain_sizes=[7, 4], max_workers=4), 2) == 4
