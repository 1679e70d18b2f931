"""The model probe: thread scaling, calibrated costs, auto group size."""

from __future__ import annotations

import dataclasses

from raynn.kfold.probe import auto_group_sizes, calibrate, predicted_makespan, useful_threads
from raynn.kfold.runner import prepare
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


def test_auto_prefers_packing_when_threads_do_not_scale(tmp_path):
    plan = prepare(make_spec(tmp_path, folds=4, models=["mlp"]))
    jobs, _ = calibrate(plan.jobs, plan.data, cores=1)
    flat = {"mlp": {1: 100.0, 2: 105.0, 4: 110.0}}
    scaling = {"mlp": {1: 100.0, 2: 200.0, 4: 400.0}}
    assert auto_group_sizes(jobs, flat, [4]) == {"mlp": 1}
    four = {"mlp": 4}
    assert predicted_makespan(jobs, scaling, four, [4]) < predicted_makespan(jobs, flat, four, [4])
    assert auto_group_sizes(jobs[:1], scaling, [4]) == {"mlp": 4}  # one job: every core


def _mixed_jobs(tmp_path, long_jobs: int, short_jobs: int):
    plan = prepare(make_spec(tmp_path, folds=2, models=["mlp"]))
    base = plan.jobs[0]
    wide = dataclasses.replace(base.model, name="wide", label="wide")
    jobs = [
        dataclasses.replace(base, job_id=f"wide{i}", model=wide, cost=100.0)
        for i in range(long_jobs)
    ] + [dataclasses.replace(base, job_id=f"mlp{i}", cost=10.0) for i in range(short_jobs)]
    return jobs


def test_auto_picks_a_size_per_model(tmp_path):
    # two long jobs of a model that scales, many short ones of a model that does not
    jobs = _mixed_jobs(tmp_path, long_jobs=2, short_jobs=16)
    speeds = {"wide": {1: 10.0, 2: 19.0, 4: 36.0}, "mlp": {1: 100.0, 2: 110.0, 4: 115.0}}
    sizes = auto_group_sizes(jobs, speeds, [8])
    assert sizes == {"wide": 4, "mlp": 1}
    uniform = [predicted_makespan(jobs, speeds, {"wide": g, "mlp": g}, [8]) for g in (1, 2, 4)]
    assert predicted_makespan(jobs, speeds, sizes, [8]) < 0.9 * min(uniform)


def test_predicted_makespan_follows_the_queue_policy(tmp_path):
    jobs = _mixed_jobs(tmp_path, long_jobs=1, short_jobs=2)
    speeds = {"wide": {1: 1.0, 2: 2.0}, "mlp": {1: 1.0, 2: 1.0}}
    # 2 cores: the wide job (100 s at 2 threads: 50 s) first, then the two short ones
    assert predicted_makespan(jobs, speeds, {"wide": 2, "mlp": 1}, [2]) == 60.0
    # first fit: the short jobs run beside the wide job on a second node
    assert predicted_makespan(jobs, speeds, {"wide": 2, "mlp": 1}, [2, 1]) == 50.0
    assert predicted_makespan(jobs, speeds, {"wide": 4, "mlp": 1}, [2]) == float("inf")


def test_the_probe_cache_answers_the_second_time(tmp_path):
    from raynn.kfold.probe import ProbeCache, ProbeReport

    plan = prepare(make_spec(tmp_path, models=["mlp", "lenet"]))
    path = tmp_path / "cache" / "probe.json"
    first, second = ProbeReport(), ProbeReport()
    jobs1, speeds1 = calibrate(plan.jobs, plan.data, 2, ProbeCache(path), first)
    jobs2, speeds2 = calibrate(plan.jobs, plan.data, 2, ProbeCache(path), second)
    assert sorted(first.measured) == ["lenet", "mlp"] and first.cached == []
    assert sorted(second.cached) == ["lenet", "mlp"] and second.measured == []
    assert speeds1 == speeds2 and [j.job_id for j in jobs1] == [j.job_id for j in jobs2]
    # another input shape, batch or thread set is another entry
    key = ProbeCache.key(plan.jobs[0].model, plan.data, 32, [1, 2])
    assert key != ProbeCache.key(plan.jobs[0].model, plan.data, 8, [1, 2])
    assert key != ProbeCache.key(plan.jobs[0].model, plan.data, 32, [1])
    # a model given as a Python callable has no name to cache it under
    own = dataclasses.replace(plan.jobs[0].model, factory=lambda *a: None)
    assert ProbeCache.key(own, plan.data, 32, [1]) is None


def test_an_unwritable_probe_cache_is_ignored(tmp_path):
    from raynn.kfold.probe import ProbeCache, ProbeReport

    blocker = tmp_path / "file"
    blocker.write_text("x")
    plan = prepare(make_spec(tmp_path, models=["mlp"]))
    report = ProbeReport()
    calibrate(plan.jobs, plan.data, 1, ProbeCache(blocker / "probe.json"), report)
    assert report.measured == ["mlp"]


def _quadratic_makespan(jobs, speeds, sizes, nodes):
    """The queue's policy simulated the plain way, a pass over every pending job whenever
    cores free up (O(n^2)): the reference for the O(n log n) simulation."""
    import heapq
    import math

    def seconds(job, cores):
        s = speeds[job.model.label]
        return job.cost * s[1] / s.get(cores, s[max(s)])

    free, pending, running, now = list(nodes), [(j, sizes[j.model.label]) for j in jobs], [], 0.0
    while pending:
        waiting = []
        for job, need in pending:
            node = next((n for n, f in enumerate(free) if f >= need), None)
            if node is None:
                waiting.append((job, need))
            else:
                free[node] -= need
                heapq.heappush(running, (now + seconds(job, need), node, need))
        pending = waiting
        if not running:
            return math.inf
        now, node, need = heapq.heappop(running)
        free[node] += need
    return max([now] + [end for end, _, _ in running])


def _random_grid(tmp_path, rng, count: int):
    plan = prepare(make_spec(tmp_path, folds=2, models=["mlp"]))
    base = plan.jobs[0]
    models = [dataclasses.replace(base.model, name=f"m{i}", label=f"m{i}") for i in range(3)]
    jobs = [
        dataclasses.replace(
            base, job_id=f"j{i}", model=models[i % 3], cost=float(rng.integers(1, 50))
        )
        for i in range(count)
    ]
    jobs.sort(key=lambda j: -j.cost)
    speeds = {m.label: {1: 1.0, 2: float(rng.uniform(1, 2)), 4: 0.0} for m in models}
    for s in speeds.values():
        s[4] = s[2] * float(rng.uniform(1, 2))
    return jobs, speeds


def test_the_fast_simulation_matches_the_plain_one_and_the_bound_holds(tmp_path):
    import numpy as np

    from raynn.kfold.probe import makespan_bound

    rng = np.random.default_rng(7)
    for trial in range(40):
        jobs, speeds = _random_grid(tmp_path, rng, int(rng.integers(1, 60)))
        sizes = {m: int(rng.choice([1, 2, 4])) for m in speeds}
        nodes = [int(n) for n in rng.integers(1, 6, size=int(rng.integers(1, 4)))]
        fast = predicted_makespan(jobs, speeds, sizes, nodes)
        assert fast == _quadratic_makespan(jobs, speeds, sizes, nodes), (trial, sizes, nodes)
        work = {m: (0.0, 0.0) for m in speeds}
        for j in jobs:
            total, largest = work[j.model.label]
            work[j.model.label] = (total + j.cost, max(largest, j.cost))
        assert makespan_bound(work, speeds, sizes, sum(nodes)) <= fast * (1 + 1e-9)


def test_the_bound_changes_no_choice_of_auto(tmp_path, monkeypatch):
    import numpy as np

    import raynn.kfold.probe as probe

    rng = np.random.default_rng(11)
    cases = [_random_grid(tmp_path, rng, int(rng.integers(1, 80))) for _ in range(15)]
    nodes = [[4], [8], [4, 2]] * 5
    simulate, runs = probe.predicted_makespan, []

    def counted(*args):  # noqa: ANN002
        runs.append(1)
        return simulate(*args)

    monkeypatch.setattr(probe, "predicted_makespan", counted)
    pruned = [auto_group_sizes(j, s, n) for (j, s), n in zip(cases, nodes, strict=True)]
    with_bound = len(runs)
    monkeypatch.setattr(probe, "makespan_bound", lambda *a: 0.0)  # never rules a trial out
    plain = [auto_group_sizes(j, s, n) for (j, s), n in zip(cases, nodes, strict=True)]
    assert pruned == plain and with_bound < len(runs) - with_bound  # the same, with fewer runs
