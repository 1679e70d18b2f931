"""The ``raynn`` joblib backend: loky's results, pinned tasks, retried workers, clear errors,
and the pool's life: one Parallel call under joblib's context, the whole block under raynn's
(through joblib's own hooks: nothing of joblib is patched)."""

from __future__ import annotations

import os

import joblib
import numpy as np
import pytest
from joblib import Parallel, delayed

import raynn.joblib
from raynn.joblib import BackendOptionError, TaskLostError
from raynn.sklearn import backend as backend_mod


@pytest.fixture(scope="module")
def ray_up():
    """One embedded Ray for the module, started by raynn's connector (so the backends here
    join it and leave it up), stopped at the end."""
    from raynn.placement import session

    started = session.connect(num_cpus=2)
    yield
    session.shutdown_if_started(started)


@pytest.fixture(scope="class")
def raynn_on(ray_up):
    """raynn's ``parallel_backend(cores_per_task=1)`` open for the class: its two workers
    start once (the backend keeps them across Parallel calls)."""
    with raynn.joblib.parallel_backend(cores_per_task=1) as backend:
        Parallel()(delayed(os.getpid)() for _ in range(2))  # starts the pool
        assert joblib.parallel.get_active_backend()[0] is backend
        yield backend


def _new_records(backend, before: int) -> list:
    return backend.pool.summary.records[before:]


def _probe() -> dict:
    import torch
    from joblib.parallel import get_active_backend

    return {
        "pid": os.getpid(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "threads": torch.get_num_threads(),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "nested": type(get_active_backend()[0]).__name__,
        "inner": Parallel(n_jobs=2)(delayed(os.getpid)() for _ in range(2)),
    }


def _die_once(marker: str, value: int) -> int:
    """Kill this worker's process in the one task that creates the marker file first
    (created atomically: two tasks starting together must not both die)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return value * 10
    os._exit(1)


def _always_die() -> None:
    os._exit(1)


@pytest.mark.ray
class TestOnePool:
    """Tasks through one pool, kept across the Parallel calls of one context."""

    def test_cv_results_equal_loky(self, raynn_on):
        """At one thread a task, GridSearchCV's cv_results_ through raynn equal loky's exactly."""
        pytest.importorskip("skorch")
        from raynn.bench.sklearn import digits, make_search

        X, y = digits(300)
        before = len(raynn_on.pool.summary.records)
        mine = make_search(grid_size=2, cv=3, epochs=2).fit(X, y)  # in the module's raynn context
        with joblib.parallel_backend("loky", n_jobs=2, inner_max_num_threads=1):
            loky = make_search(grid_size=2, cv=3, epochs=2).fit(X, y)
        assert mine.best_params_ == loky.best_params_ and mine.best_score_ == loky.best_score_
        for key in ("mean_test_score", "std_test_score", "rank_test_score", "split0_test_score"):
            assert np.array_equal(mine.cv_results_[key], loky.cv_results_[key]), key
        assert mine.cv_results_["params"] == loky.cv_results_["params"]
        records = _new_records(raynn_on, before)
        assert len(records) == 12 and all(r.status == "ok" for r in records)  # 4 x 3 folds

    def test_tasks_run_pinned_and_capped(self, raynn_on):
        """Each task sees only its core group's CPUs and as many threads; nesting is sequential."""
        before = len(raynn_on.pool.summary.records)
        out = Parallel()(delayed(_probe)() for _ in range(6))
        records = _new_records(raynn_on, before)
        assert raynn_on.pool.summary.slots == 2 and not raynn_on.pool.summary.started_ray
        groups = {r.pid: r.cpus for r in records}
        for task in out:
            assert task["affinity"] == groups[task["pid"]]
            assert task["threads"] == len(groups[task["pid"]]) == 1
            assert task["omp"] == "1"
            assert task["nested"] == "SequentialBackend"
            assert task["inner"] == [task["pid"]] * 2  # the nested call stayed in the task
        cpus = sorted(c for g in {tuple(g) for g in groups.values()} for c in g)
        assert cpus == sorted(os.sched_getaffinity(0))[:2]  # disjoint groups, one per core
        assert all(r.affinity == r.cpus and r.torch_threads == 1 for r in records)

    def test_killed_worker_is_retried(self, raynn_on, tmp_path):
        """A task that kills its worker's process runs again on a fresh worker and returns."""
        marker = tmp_path / "died"
        summary = raynn_on.pool.summary
        before, workers = len(summary.records), summary.workers
        out = Parallel()(delayed(_die_once)(str(marker), i) for i in range(3))
        assert out == [0, 10, 20]
        records = _new_records(raynn_on, before)
        lost = [r for r in records if r.status == "worker_lost"]
        assert len(lost) == 1
        retried = [r for r in records if r.task_id == lost[0].task_id and r.status == "ok"]
        assert len(retried) == 1 and retried[0].attempt == 2
        assert retried[0].worker != lost[0].worker  # a fresh worker
        assert summary.workers == workers + 1  # the replacement


@pytest.mark.ray
def test_context_end_stops_the_workers(ray_up):
    """Leaving the context kills the workers; last_run() then holds the run's summary."""
    import psutil

    with joblib.parallel_backend("raynn", cores_per_task=2):
        pids = set(Parallel()(delayed(os.getpid)() for _ in range(2)))
    summary = raynn.joblib.last_run()
    assert summary.workers == 1 and {r.pid for r in summary.records} == pids
    gone, alive = psutil.wait_procs([psutil.Process(p) for p in pids], timeout=30)
    assert not alive


@pytest.mark.ray
def test_raynn_s_context_keeps_one_pool_until_its_end(ray_up):
    """Under raynn's parallel_backend the Parallel calls (a nested parallel_config's too)
    share one pool; leaving the block stops its workers and last_run() has every task."""
    import psutil

    with raynn.joblib.parallel_backend(cores_per_task=2) as backend:
        first = set(Parallel()(delayed(os.getpid)() for _ in range(2)))
        pool = backend.pool
        with joblib.parallel_config(verbose=0):  # re-activates the same backend on exit
            second = set(Parallel()(delayed(os.getpid)() for _ in range(2)))
        third = set(Parallel()(delayed(os.getpid)() for _ in range(2)))
        assert pool is not None and backend.pool is pool and first == second == third
    assert backend.pool is None
    summary = raynn.joblib.last_run()
    assert summary is pool.summary and summary.workers == 1 and len(summary.records) == 6
    gone, alive = psutil.wait_procs([psutil.Process(p) for p in first], timeout=30)
    assert not alive


@pytest.mark.ray
def test_worker_dying_every_time_fails_the_call(ray_up):
    """After max_attempts lost attempts the joblib call raises TaskLostError."""
    with joblib.parallel_backend("raynn", cores_per_task=2, max_attempts=2):
        with pytest.raises(TaskLostError, match="died on each of its 2 attempts"):
            Parallel()(delayed(_always_die)() for _ in range(1))
    assert raynn.joblib.last_run().retries == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cores_per_task": 0}, "cores_per_task must be a whole number >= 1, got 0"),
        ({"cores_per_task": "2"}, "cores_per_task must be a whole number >= 1, got '2'"),
        ({"cores": 1}, "unknown option 'cores'; valid options: address, cores_per_task"),
        ({"max_attempts": 0}, "max_attempts must be a whole number >= 1"),
        ({"address": 5}, "address must be a Ray address"),
        ({"inner_max_num_threads": 2}, "pass cores_per_task instead"),
    ],
)
def test_bad_option_is_one_clear_line(options, message):
    """A bad option fails when the context is entered, before Ray starts: one line."""
    with pytest.raises(BackendOptionError) as info:
        with joblib.parallel_backend("raynn", **options):
            pass
    text = str(info.value)
    assert message in text and "\n" not in text and text.startswith("joblib backend 'raynn'")
    assert isinstance(info.value, ValueError)


def test_a_bad_option_of_raynn_s_context_is_one_clear_line():
    """raynn's own context checks the options as it is entered, before anything starts."""
    with pytest.raises(BackendOptionError, match="unknown option 'cores'"):
        with raynn.joblib.parallel_backend(cores=1):
            pass
    with pytest.raises(BackendOptionError, match="cores_per_task must be a whole number"):
        with raynn.joblib.parallel_backend(cores_per_task=0):
            pass


def test_joblib_is_not_patched():
    """Importing raynn.joblib registers the backend and changes nothing of joblib's own."""
    from joblib.parallel import BACKENDS, parallel_config

    assert BACKENDS["raynn"] is raynn.joblib.RaynnBackend
    for name in ("__init__", "__enter__", "__exit__", "unregister"):
        method = getattr(parallel_config, name)
        assert method.__module__ == "joblib.parallel", name
        assert method.__qualname__ == f"parallel_config.{name}", name


class _StandInPool:
    """A WorkerPool that starts nothing: counts its shutdowns."""

    made: list[_StandInPool] = []

    def __init__(self, *args: object) -> None:
        self.slots = [0, 1]
        self.summary = f"summary of pool {len(self.made)}"
        self.shutdowns = 0
        self.made.append(self)

    def start(self) -> None:
        pass

    def cancel_pending(self) -> None:
        pass

    def shutdown(self) -> None:
        self.shutdowns += 1


def _one_call(backend: raynn.joblib.RaynnBackend) -> None:
    """What joblib does to a backend in one Parallel call: configure, then terminate."""
    backend.configure(n_jobs=-1)
    backend.terminate()


@pytest.mark.timeout(60)
def test_the_pool_lives_for_a_call_or_for_raynn_s_block(monkeypatch):
    """joblib's context: each Parallel call's pool ends with the call. raynn's: one pool for
    every call inside, nested contexts too, ended with the block, an error or not."""
    monkeypatch.setattr(_StandInPool, "made", [])
    monkeypatch.setattr(backend_mod, "WorkerPool", _StandInPool)
    made = _StandInPool.made
    with joblib.parallel_backend("raynn", cores_per_task=1):
        backend = joblib.parallel.get_active_backend()[0]
        _one_call(backend)
        assert len(made) == 1 and made[0].shutdowns == 1 and backend.pool is None
        _one_call(backend)
        assert len(made) == 2 and made[1].shutdowns == 1
    assert raynn.joblib.last_run() == "summary of pool 1"

    with raynn.joblib.parallel_backend(cores_per_task=1) as backend:
        assert joblib.parallel.get_active_backend()[0] is backend
        _one_call(backend)
        with joblib.parallel_config(verbose=0):
            _one_call(backend)
            backend.abort_everything(ensure_ready=False)  # a failed call: the pool stays
        _one_call(backend)
        assert len(made) == 3 and made[2].shutdowns == 0 and backend.pool is made[2]
    assert made[2].shutdowns == 1 and backend.pool is None and not backend.keep_pool
    assert raynn.joblib.last_run() == "summary of pool 2"
    assert joblib.parallel.get_active_backend()[0] is not backend

    with pytest.raises(RuntimeError, match="inside"):
        with raynn.joblib.parallel_backend() as backend:
            _one_call(backend)
            raise RuntimeError("inside")
    assert len(made) == 4 and made[3].shutdowns == 1 and backend.pool is None


def test_too_many_cores_per_task_says_how_many():
    """cores_per_task above this machine's CPUs fails at the first Parallel call."""
    too_many = len(os.sched_getaffinity(0)) + 1
    with pytest.raises(BackendOptionError, match=f"cores_per_task={too_many} is more than"):
        with joblib.parallel_backend("raynn", cores_per_task=too_many):
            Parallel()(delayed(abs)(-1) for _ in range(1))
