"""Prefetch: after short jobs a worker leases several at once (a ``Batch``), runs them on
the same cores and hands their results over together, in one call."""

from __future__ import annotations

import dataclasses

import pytest

from raynn.kfold import handover
from raynn.kfold.leases import LEASE_FACTOR
from raynn.kfold.messages import Batch, Grant, Outcome
from raynn.kfold.queue import JobQueue
from tests.test_queue import _jobs, _one_core_workers, _sized


def _ids(answer) -> list[str]:
    grants = answer.grants if isinstance(answer, Batch) else (answer,)
    return [g.job.job_id for g in grants]


def test_a_batch_takes_the_next_jobs_while_every_worker_could_get_two_more():
    q = JobQueue(_jobs(10))
    _one_core_workers(q, 1)
    batch = q.lease("w0", want=8)
    # after j0, 9 are pending; one worker: a share of 9 // 2 = 4 more, not 7
    assert isinstance(batch, Batch) and _ids(batch) == ["j0", "j1", "j2", "j3", "j4"]
    assert {(g.cores, g.attempt) for g in batch.grants} == {((0,), 1)}
    stats = q.stats()
    assert (stats.pending, stats.running) == (5, 5)
    assert isinstance(q.lease("w0"), Grant)  # want=1 (the default): one job, as before


def test_four_workers_share_the_tail_and_a_batch_stops_at_a_job_needing_other_cores():
    q = JobQueue(_jobs(10))
    _one_core_workers(q, 4)
    assert _ids(q.lease("w0", want=16)) == ["j0", "j1"]  # 9 // (2 * 4) = 1 more
    assert _ids(q.lease("w1", want=16)) == ["j2"]  # 7 // 8 = 0 more
    q = JobQueue(_sized([1, 1, 2, 1, 1, 1, 1, 1, 1, 1]))
    _one_core_workers(q, 2)
    assert _ids(q.lease("w0", want=16)) == ["j0", "j1"]  # j2 needs two cores: in order only


def test_a_batch_holds_no_job_longer_than_those_its_worker_measured():
    # fold racing's order is not longest first: a long job's run would outlast the leases
    # of the batch's jobs after it
    costs = [1.0, 1.0, 50.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    q = JobQueue([dataclasses.replace(j, cost=c) for j, c in zip(_jobs(10), costs, strict=True)])
    _one_core_workers(q, 1)
    assert _ids(q.lease("w0", want=16)) == ["j0", "j1"]  # j2 costs more than the first
    done = [Outcome("j0", metrics={}), Outcome("j1", metrics={})]
    _, answer = q.finish("w0", done, want=16)
    assert _ids(answer) == ["j2"]  # 50x what the worker asked by: alone
    _, answer = q.finish("w0", [Outcome("j2", metrics={})], want=16)
    assert _ids(answer) == ["j3", "j4", "j5", "j6"]  # 6 // 2 = 3 more, none over 50


def test_a_batchs_cores_stay_held_until_its_last_job_ends():
    q = JobQueue(_jobs(10))
    _one_core_workers(q, 2)
    assert _ids(q.lease("w0", want=3)) == ["j0", "j1", "j2"]  # 9 // 4 = 2 more
    for job_id in ("j0", "j1"):
        q.complete(job_id)
        assert q.free_cores("n") == [1] and q.cores_of("w0") == (0,)
    q.complete("j2")
    assert q.free_cores("n") == [0, 1]


def test_finish_completes_a_batch_and_leases_the_next_in_one_call():
    q = JobQueue(_jobs(10))
    _one_core_workers(q, 1)
    first = q.lease("w0", want=3)
    done = [Outcome(g.job.job_id, metrics={"val_loss": 1.0}) for g in first.grants]
    cancelled, answer = q.finish("w0", done, want=2)
    assert cancelled == [] and _ids(answer) == ["j3", "j4"]
    assert q.stats().done == 3 and q.cores_of("w0") == (0,)


def test_a_dead_workers_batch_goes_back_to_the_front_in_its_order():
    q = JobQueue(_jobs(10), max_attempts=2)
    _one_core_workers(q, 2)
    assert _ids(q.lease("w0", want=3)) == ["j0", "j1", "j2"]
    assert q.release_worker("w0") == []
    again = q.lease("w1", want=3)
    assert _ids(again) == ["j0", "j1", "j2"] and {g.attempt for g in again.grants} == {2}


def test_the_last_epoch_is_measured_with_its_outcome_not_a_progress_call():
    now = [0.0]
    jobs = [
        dataclasses.replace(j, training=dataclasses.replace(j.training, epochs=1)) for j in _jobs(3)
    ]
    q = JobQueue(jobs, clock=lambda: now[0])
    q.lease("w0")
    now[0] = 100.0  # the job ran 30 s of the 100 since its lease (it waited in a batch)
    q.finish("w0", [Outcome("j0", metrics={"val_loss": 0.5}, epochs=1, seconds=30.0)])
    assert q.allowance(jobs[0]) == pytest.approx(max(60.0, LEASE_FACTOR * 30.0))
    assert q.stats().done_seconds == [30.0]
    q.complete("j1")  # leased at t=100 by the finish, ended at t=100 with no seconds: 0
    assert sorted(q.stats().done_seconds) == [0.0, 30.0]


@pytest.mark.parametrize(("seconds", "want"), [(1.0, 1), (0.2, 1), (0.01, 20), (0.0, 32)])
def test_a_worker_asks_for_more_jobs_after_shorter_ones(seconds, want):
    assert handover.PREFETCH_SECONDS == 0.2 and handover.PREFETCH_MAX == 32
    assert handover.want(seconds) == want


def test_a_serial_run_in_batches_writes_every_job_once(tmp_path, monkeypatch):
    from raynn.kfold.executors.serial import SerialExecutor
    from raynn.kfold.runner import run
    from raynn.runs.results import read_table
    from tests.conftest import make_spec

    handed: list[int] = []
    real = handover.Handover.hand_over

    def spy(self, worker, results, wants=1):
        handed.append(len(results))
        return real(self, worker, results, wants)

    monkeypatch.setattr(handover.Handover, "hand_over", spy)
    monkeypatch.setattr("raynn.kfold.workers.want_after", lambda results: 3)
    spec = make_spec(tmp_path, training={"epochs": 1})
    result = run(spec, executor=SerialExecutor(threads=1), progress=False)
    jobs = read_table(result.run_dir, "jobs")
    assert len(jobs) == len(set(jobs["job_id"])) == sum(handed)
    assert set(jobs["status"]) == {"ok"} and set(jobs["attempt"]) == {1}
    assert max(handed) > 1  # some handovers carried a batch
