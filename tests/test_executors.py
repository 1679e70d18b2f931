"""The same spec through every executor: same rows, same metrics, pinned disjoint cores."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from raynn.kfold.executors.serial import SerialExecutor
from raynn.kfold.runner import run
from tests.conftest import make_spec
from tests.executors import (
    ALL,
    PARALLEL,
    beside,
    kill_worker,
    leases,
    make_executor,
    wait_for,
    workers,
)

pytestmark = pytest.mark.ray

METRICS = ["val_loss", "val_accuracy", "test_loss", "test_accuracy"]
EPOCH_METRICS = ["loss", "accuracy", "val_loss", "val_accuracy", "lr"]
SLOW_DATA = {"name": "synthetic", "shape": [1, 24, 24], "samples": 3000, "limit": None}


@pytest.fixture(scope="module")
def runs(ray_local, tmp_path_factory):
    """The tiny spec run once by each executor (the serial one at one thread per job), tail
    widening off: the bit-identity test compares runs at one thread per job throughout."""
    spec = make_spec(
        tmp_path_factory.mktemp("exec"),
        schedulers=["cosine", "warm"],
        scheduling={"tail_widening": False},
    )
    return {name: run(spec, executor=make_executor(name), progress=False) for name in ALL}


@pytest.mark.parametrize("name", ALL)
def test_every_job_has_one_ok_row_and_readable_tables(runs, name):
    result = runs[name]
    jobs = pd.read_parquet(result.run_dir / "jobs")
    assert result.ok and len(jobs) == 8 and jobs["job_id"].is_unique
    assert (jobs["status"] == "ok").all() and (jobs["attempt"] == 1).all()
    epochs = pd.read_parquet(result.run_dir / "epochs")
    assert len(epochs) == 8 * 3 and (epochs["samples_per_second"] > 0).all()
    util = pd.read_parquet(result.run_dir / "utilization")
    assert not util.empty and util["percent"].between(0, 100).all()
    assert (result.run_dir / "run.json").is_file() and (result.run_dir / "report.md").is_file()
    assert not list((result.run_dir / "checkpoints").glob("*.ckpt"))
    attempt = json.loads((result.run_dir / "run.json").read_text())["runs"][-1]
    assert attempt["executor"] == name
    assert 0 < attempt["stages"]["data_loaded"] <= attempt["stages"]["scheduled"]


@pytest.mark.timeout(120)
def test_the_wall_time_counts_loading_and_planning(tmp_path, monkeypatch):
    import time

    import raynn.kfold.runner as runner

    planned, plan_jobs = [], runner.plan_jobs

    def timed(*args):  # noqa: ANN002
        planned.append(time.time())
        return plan_jobs(*args)

    monkeypatch.setattr(runner, "plan_jobs", timed)
    called = time.time()
    result = run(make_spec(tmp_path, models=["mlp"], folds=2), executor="serial", progress=False)
    attempt = json.loads((result.run_dir / "run.json").read_text())["runs"][-1]
    assert called <= attempt["start"] <= planned[0] <= attempt["end"]
    assert attempt["wall_seconds"] == attempt["end"] - attempt["start"]


@pytest.mark.parametrize("name", PARALLEL)
def test_parallel_and_serial_metrics_are_bit_identical(runs, name):
    a, b = (
        pd.read_parquet(runs[n].run_dir / "jobs").set_index("job_id").sort_index()
        for n in ("serial", name)
    )
    pd.testing.assert_frame_equal(a[METRICS], b[METRICS], check_exact=True)
    ea, eb = (
        pd.read_parquet(runs[n].run_dir / "epochs")
        .sort_values(["job_id", "epoch"])
        .reset_index(drop=True)
        for n in ("serial", name)
    )
    pd.testing.assert_frame_equal(ea[EPOCH_METRICS], eb[EPOCH_METRICS], check_exact=True)
    assert (ea["threads"] == 1).all() and (eb["threads"] == 1).all()  # what was compared


@pytest.mark.parametrize("name", PARALLEL)
def test_concurrent_workers_never_share_a_core(runs, name):
    jobs = pd.read_parquet(runs[name].run_dir / "jobs")
    assert (jobs["threads"] == 1).all()
    assert (jobs["cores"].map(len) == jobs["threads"]).all()
    assert jobs["worker"].nunique() == 2
    by_worker = jobs.groupby("worker")["cores"].agg(lambda c: {tuple(x) for x in c})
    assert all(len(cores) == 1 for cores in by_worker)  # a worker stays on its group
    assert _overlaps_on_disjoint_cores(jobs) > 0  # the jobs really ran side by side
    # what was in force for every thread of the worker, and its thread pools, at one thread
    assert (jobs["affinity"].map(list) == jobs["cores"].map(list)).all()
    assert jobs["thread_pools"].map(lambda pools: all(p.endswith("=1") for p in pools)).all()


def _overlaps_on_disjoint_cores(jobs: pd.DataFrame) -> int:
    """Assert that jobs running at the same time held disjoint cores; count such pairs."""
    rows = jobs.to_dict("records")
    overlapping = 0
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            if a["start_time"] < b["end_time"] and b["start_time"] < a["end_time"]:
                overlapping += 1
                assert not set(a["cores"]) & set(b["cores"]), (a["job_id"], b["job_id"])
    return overlapping


def _allowed(pid: int) -> dict[int, set[int]]:
    """Every thread of ``pid`` and the CPUs it may run on, read from outside (/proc)."""
    from raynn.placement.topology import parse_cpu_list

    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        line = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list:"))
        out[int(task.name)] = set(parse_cpu_list(line.split(":", 1)[1]))
    return out


@pytest.mark.parametrize("name", PARALLEL)
def test_every_thread_of_every_worker_stays_on_its_own_cores(ray_local, tmp_path, name):
    spec = make_spec(
        tmp_path,
        models=["lenet"],
        folds=2,
        dataset=SLOW_DATA,
        training={"epochs": 4},
        scheduling={"probe": False, "tail_widening": False},
    )
    executor = make_executor(name)
    seen: list[dict] = []

    def watch(ended) -> None:
        def both_training():
            if sum(epoch >= 1 for _, _, epoch in leases(executor).values()) < 2:
                return None
            return [(pid, set(cpus), _allowed(pid)) for _, pid, cpus in workers(executor)]

        found = wait_for(both_training, stop=ended)
        if found:
            seen.extend({"cpus": cpus, "threads": threads} for _, cpus, threads in found)

    with beside(watch):
        result = run(spec, executor=executor, progress=False)
    assert result.ok and len(seen) == 2, seen
    for worker in seen:
        # the training threads, the OpenMP pool and Ray's own threads alike
        assert len(worker["threads"]) >= 1
        assert all(mask <= worker["cpus"] for mask in worker["threads"].values()), worker
    assert not seen[0]["cpus"] & seen[1]["cpus"]


@pytest.mark.parametrize("name", PARALLEL)
def test_auto_gives_each_model_its_own_cores_per_job(ray_local, tmp_path, monkeypatch, name):
    import raynn.kfold.runner

    asked = []

    def choose(jobs, speeds, nodes):  # the probe's choice, fixed so the test is exact
        asked.append((sorted(speeds), list(nodes)))
        return {"lenet": 2, "mlp": 1}

    monkeypatch.setattr(raynn.kfold.runner, "auto_group_sizes", choose)
    spec = make_spec(tmp_path, folds=3, scheduling={"probe": True, "tail_widening": False})
    result = run(spec, executor=make_executor(name), progress=False)
    assert asked == [(["lenet", "mlp"], [2])]
    jobs = pd.read_parquet(result.run_dir / "jobs")
    assert result.ok and len(jobs) == 6
    threads = jobs.groupby("model")["threads"].agg(set).to_dict()
    assert threads == {"lenet": {2}, "mlp": {1}}
    assert (jobs["cores"].map(len) == jobs["threads"]).all()
    assert (jobs["affinity"].map(list) == jobs["cores"].map(list)).all()
    _overlaps_on_disjoint_cores(jobs)
    last = json.loads((result.run_dir / "run.json").read_text())["runs"][-1]
    assert last["cores_by_model"] == {"lenet": 2, "mlp": 1}
    assert (last["cores_per_job"], last["workers"]) == (1, 2)  # groups of the smallest size
    assert (
        "cores per job (auto, per model): lenet 2, mlp 1"
        in (result.run_dir / "report.md").read_text()
    )
    # a job run on 1 thread gives exactly the serial single-thread results
    ref = run(spec, executor=SerialExecutor(threads=1), progress=False)
    ref_jobs = pd.read_parquet(ref.run_dir / "jobs").set_index("job_id")
    mlp = jobs[jobs["model"] == "mlp"].set_index("job_id")
    assert (mlp[METRICS] == ref_jobs.loc[mlp.index, METRICS]).all().all()


@pytest.mark.parametrize("name", PARALLEL)
def test_jobs_wider_than_every_node_fail_clearly_and_resume(ray_local, tmp_path, monkeypatch, name):
    import raynn.kfold.runner
    from raynn.errors import RaynnError

    # as if the node that fit 4-core jobs had left: lenet's jobs fit no node now
    monkeypatch.setattr(raynn.kfold.runner, "auto_group_sizes", lambda *a: {"lenet": 4, "mlp": 1})
    spec = make_spec(tmp_path, scheduling={"probe": True})
    with pytest.raises(RaynnError, match="2 job.s. need more cores than"):
        run(spec, executor=make_executor(name), progress=False)
    (run_dir,) = (tmp_path / "runs").iterdir()
    done = pd.read_parquet(run_dir / "jobs")
    assert set(done["model"]) == {"mlp"} and (done["status"] == "ok").all()  # kept
    monkeypatch.undo()  # the probe's own choice again
    result = run(resume=run_dir, executor=make_executor(name), progress=False)
    assert result.ok and len(result.jobs) == 4 and (result.jobs["status"] == "ok").all()


@pytest.mark.parametrize("name", PARALLEL)
def test_killed_worker_job_is_retried_from_its_checkpoint(ray_local, tmp_path, name):
    spec = make_spec(
        tmp_path,
        models=["lenet"],
        folds=2,
        schedulers=["cosine"],
        dataset=SLOW_DATA,
        training={"epochs": 5, "checkpoint_seconds": 1e-9},
        scheduling={"tail_widening": False},  # compared with a one-thread run below
    )
    executor = make_executor(name)
    killed: list[str] = []

    def killer(ended) -> None:
        # a job reports epoch 2 only after its epoch-1 checkpoint is saved (a checkpoint is
        # saved in the background, and the next one waits for it): kill it then
        def mid_job():
            return next(
                ((j, w) for j, (w, _, epoch) in leases(executor).items() if 2 <= epoch <= 3),
                None,
            )

        found = wait_for(mid_job, stop=ended)
        if found:
            kill_worker(executor, found[1])
            killed.append(found[0])

    with beside(killer):
        result = run(spec, executor=executor, progress=False)
    assert killed, "no job was caught mid-run"
    jobs = pd.read_parquet(result.run_dir / "jobs").set_index("job_id")
    assert result.ok and len(jobs) == 2 and (jobs["status"] == "ok").all()
    victim = jobs.loc[killed[0]]
    assert victim["attempt"] == 2 and victim["resumed_from_epoch"] >= 1
    epochs = pd.read_parquet(result.run_dir / "epochs")
    assert len(epochs[epochs["job_id"] == killed[0]]) == 5
    # the retried job's metrics equal an undisturbed run of the same job
    reference = run(spec, executor=SerialExecutor(threads=1), progress=False)
    ref = pd.read_parquet(reference.run_dir / "jobs").set_index("job_id")
    assert victim[METRICS].tolist() == ref.loc[killed[0], METRICS].tolist()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", PARALLEL)
def test_a_stuck_job_loses_its_lease_and_runs_again(ray_local, tmp_path, name):
    # The stuck job hangs in its first training step; the healthy ones renew their leases
    # with every step (a heartbeat), so on a loaded machine only the stuck one is killed:
    # the deadline is 10 s without a step, not 10 s without an epoch end.
    marker = tmp_path / "hung"
    stuck = {
        "name": "tests.helpers:hangs_once_mlp",
        "label": "stuck",
        "args": {"marker": str(marker)},
    }
    spec = make_spec(
        tmp_path,
        models=["mlp", stuck],
        folds=2,
        training={"epochs": 2},
        scheduling={"probe": False, "lease_timeout": 10, "cores_per_job": 1},
    )
    result = run(spec, executor=make_executor(name), progress=False)
    assert marker.exists(), "no job hung: the test proves nothing"
    jobs = result.jobs.set_index("job_id")
    assert result.ok and len(jobs) == 4 and (jobs["status"] == "ok").all()
    assert sorted(jobs["attempt"]) == [1, 1, 1, 2]  # the stuck one ran again, once
    assert jobs.loc[jobs["attempt"] == 2].index[0].startswith("stuck-")


@pytest.mark.parametrize("name", ["serial", "local"])  # the queue lives in this process
def test_every_job_renews_its_lease_as_it_trains(tmp_path, monkeypatch, name):
    from raynn.kfold.queue import JobQueue

    beats: list[tuple[str, str]] = []
    real = getattr(JobQueue, "heartbeat", None)

    def heartbeat(self, job_id: str, worker: str) -> None:
        beats.append((job_id, worker))
        if real is not None:
            real(self, job_id, worker)

    monkeypatch.setattr(JobQueue, "heartbeat", heartbeat, raising=False)
    spec = make_spec(tmp_path, models=["mlp"], training={"epochs": 1}, scheduling={"probe": False})
    result = run(spec, executor=make_executor(name), progress=False)
    assert result.ok and len(result.jobs) == 2
    # every job's steps beat, each from the worker that held it
    assert set(beats) == set(zip(result.jobs["job_id"], result.jobs["worker"], strict=True))


@pytest.mark.parametrize("actor", ["queue", "collector"])
def test_a_dead_queue_or_collector_ends_the_run_in_one_line_and_resume_finishes(
    ray_local, tmp_path, actor
):
    import ray

    from raynn.errors import RaynnError

    spec = make_spec(tmp_path, models=["lenet"], folds=2, dataset=SLOW_DATA, training={"epochs": 3})
    executor = make_executor("ray")

    def killer(ended) -> None:
        if wait_for(lambda: leases(executor), stop=ended):
            ray.kill(getattr(executor.current, actor), no_restart=True)

    with pytest.raises(RaynnError) as err, beside(killer):
        run(spec, executor=executor, progress=False)
    name = {"queue": "JobQueue", "collector": "ResultsCollector"}[actor]
    assert f"the run's {name} actor died" in str(err.value) and "--resume" in str(err.value)
    assert "\n" not in str(err.value)
    (run_dir,) = (tmp_path / "runs").iterdir()
    again = run(resume=run_dir, executor=SerialExecutor(threads=1), progress=False)
    assert again.ok and len(again.jobs) == 2 and (again.jobs["status"] == "ok").all()


def test_a_joiner_whose_probe_fails_or_hangs_neither_stalls_nor_aborts_the_run(ray_local, tmp_path):
    import ray

    @ray.remote(num_cpus=0, max_retries=0)
    def dying_probe():
        raise ConnectionError("the joiner went away")

    @ray.remote(num_cpus=0, max_retries=0)
    def hanging_probe(seconds):
        import time

        time.sleep(seconds)

    executor = make_executor("ray")
    real, asked, calls = executor.start_probes, [], []
    gate = tmp_path / "probes-asked"  # the jobs train only once both fakes were asked

    def start_probes(exclude):
        calls.append(exclude)
        if len(calls) == 1:  # the probe before the run: the real nodes
            return real(exclude)
        fakes = {"fake-dying": dying_probe, "fake-hanging": hanging_probe}
        out = real(exclude)  # no real joiner: empty
        for node_id, task in fakes.items():
            if node_id not in exclude:
                asked.append(node_id)
                ref = task.remote() if task is dying_probe else task.remote(600)
                out.append(({"NodeID": node_id, "Resources": {"CPU": 1}}, ref))
        if {"fake-dying", "fake-hanging"} <= set(asked):
            gate.touch()
        return out

    gated = {"name": "tests.helpers:gated_mlp", "label": "gated", "args": {"gate": str(gate)}}
    spec = make_spec(
        tmp_path,
        models=[gated],
        schedulers=["cosine", "warm", "step"],
        scheduling={"probe": False},  # the probe would train the gated model in the driver
    )
    executor.start_probes = start_probes
    result = run(spec, executor=executor, progress=False)
    assert "fake-hanging" in asked, "no poll ran while jobs were pending: the test proves nothing"
    assert result.ok and len(result.jobs) == 6 and (result.jobs["status"] == "ok").all()


@pytest.mark.parametrize("name", PARALLEL)
def test_nan_job_fails_alone(ray_local, tmp_path, name):
    spec = make_spec(
        tmp_path, models=["mlp", {"name": "tests.helpers:exploding_mlp", "label": "boom"}]
    )
    result = run(spec, executor=make_executor(name), progress=False)
    jobs = pd.read_parquet(result.run_dir / "jobs").set_index("job_id")
    assert len(jobs) == 4
    assert (jobs.loc[jobs["model"] == "mlp", "status"] == "ok").all()
    boom = jobs[jobs["model"] == "boom"]
    assert (boom["status"] == "failed").all()
    assert boom["error"].str.contains("loss became").all()


@pytest.mark.parametrize("name", PARALLEL)
def test_tail_widening_gives_the_last_job_the_freed_core(ray_local, tmp_path, name):
    # 3 jobs on 2 workers: the worker of the second job retires while the third runs. Each
    # step sleeps, so the jobs take equal wall time even when another process starves one
    # worker's core (with CPU-bound jobs, a worker at half speed ends its one job together
    # with the other worker's two, and nothing is left to widen).
    sleepy = {"name": "tests.helpers:sleepy_mlp", "label": "sleepy", "args": {"seconds": 0.015}}
    spec = make_spec(
        tmp_path,
        models=[sleepy],
        folds=3,
        dataset={"name": "synthetic", "shape": [1, 24, 24], "samples": 1800, "limit": None},
        training={"epochs": 6},
        scheduling={"probe": False, "tail_widening": True},
    )
    result = run(spec, executor=make_executor(name), progress=False)
    jobs = pd.read_parquet(result.run_dir / "jobs").set_index("job_id")
    epochs = pd.read_parquet(result.run_dir / "epochs").sort_values(["job_id", "epoch"])
    threads = epochs.groupby("job_id")["threads"].agg(list)
    assert (jobs["threads"] == 1).all() and all(t[0] == 1 for t in threads)
    widened = [j for j, t in threads.items() if max(t) == 2]
    # once a worker retires, the job still running takes its core at an epoch boundary
    assert widened, threads.to_dict()
    assert all(t == sorted(t) for t in threads)  # widening only ever adds threads
    # every thread of the widened worker moved with it, onto both workers' cores
    both = sorted({c for cores in jobs["cores"] for c in cores})
    assert len(both) == 2 and all(sorted(jobs.loc[j, "affinity"]) == both for j in widened)
    reference = run(spec, executor=SerialExecutor(threads=1), progress=False)
    ref = pd.read_parquet(reference.run_dir / "jobs").set_index("job_id")
    untouched = [j for j in jobs.index if j not in widened]
    # jobs that never widened give exactly the single-thread results
    assert (jobs.loc[untouched, METRICS] == ref.loc[untouched, METRICS]).all().all()
