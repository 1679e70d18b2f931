"""JobQueue and core groups as plain classes: leases, retries, retirement, tail widening,
and the typed messages the queue answers its workers with."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from raynn.errors import SpecError
from raynn.kfold.core_map import WAIT_SECONDS
from raynn.kfold.grid import Job
from raynn.kfold.messages import Continue, Grant, Retire, Stop, Wait, Widen
from raynn.kfold.queue import JobQueue
from raynn.placement.cores import check_cores_per_job, core_groups, resolve_cores_per_job
from raynn.spec import Component, TrainingSpec


def _jobs(n: int, max_threads: int = 0, cores: int = 0) -> list[Job]:
    return [
        Job(
            f"j{i}",
            i,
            Component("mlp"),
            Component("cosine"),
            i,
            i,
            training=TrainingSpec(epochs=5),
            max_threads=max_threads,
            cores=cores,
        )
        for i in range(n)
    ]


def test_leases_in_order_then_none():
    q = JobQueue(_jobs(2))
    assert q.lease("w0").job.job_id == "j0"
    grant = q.lease("w1")
    assert isinstance(grant, Grant) and grant.queue_wait >= 0
    assert (grant.job.job_id, grant.attempt, grant.cores) == ("j1", 1, ())
    assert q.lease("w0") == Retire()
    q.complete("j0")
    q.complete("j1", ok=False, error="boom")
    stats = q.stats()
    assert (stats.done, stats.failed, stats.pending, stats.running) == (1, 1, 0, 0)
    assert stats.finished


def test_dead_worker_job_goes_back_to_the_front_until_max_attempts():
    q = JobQueue(_jobs(3), max_attempts=2)
    q.lease("w0")
    assert q.release_worker("w0") == []
    grant = q.lease("w1")
    assert (grant.job.job_id, grant.attempt) == ("j0", 2)
    exhausted = q.release_worker("w1")
    assert [(j.job_id, a) for j, a in exhausted] == [("j0", 2)]
    assert q.stats().failed == 1 and q.lease("w2").job.job_id == "j1"


def _two_workers(max_threads: int = 0, jobs: int = 2) -> JobQueue:
    q = JobQueue(_jobs(jobs, max_threads), tail_widening=True)
    q.register("w0", "n", (0, 1))
    q.register("w1", "n", (2, 3))
    q.register("w2", "other", (0, 1))
    return q


def test_tail_widening_takes_freed_cores_of_the_same_node():
    q = _two_workers()
    q.lease("w0")
    q.lease("w1")
    assert q.progress("j0", 1) == Continue()  # nothing free yet
    q.complete("j1")
    assert q.lease("w1") == Retire()  # w1 retires: cores 2, 3 are free
    assert q.progress("j0", 1) == Widen((0, 1, 2, 3))
    assert q.cores_of("w0") == (0, 1, 2, 3)
    assert q.progress("j0", 5) == Continue()  # the last epoch: nothing to widen for


def test_widening_respects_max_threads_pending_jobs_and_the_switch():
    q = _two_workers(max_threads=3)
    q.lease("w0")
    q.lease("w1")
    q.complete("j1")
    q.lease("w1")
    assert q.progress("j0", 1) == Widen((0, 1, 2))
    q = _two_workers(jobs=3)
    q.lease("w0")
    q.lease("w1")
    q.complete("j1")
    q.lease("w1")  # w1 takes j2: nothing is free
    assert q.progress("j0", 1) == Continue()
    q = _two_workers(jobs=3)
    q.lease("w0")
    q.lease("w1")
    q.complete("j1")
    q.release_worker("w2")
    q.register("w1", "n", (2, 3))  # w1 holds nothing: cores 2, 3 free, but j2 is pending
    assert q.free_cores("n") == [2, 3] and q.progress("j0", 1) == Continue()
    q = JobQueue(_jobs(2))
    q.register("w0", "n", (0,))
    q.register("w1", "n", (1,))
    q.lease("w0")
    q.lease("w1")
    q.complete("j1")
    q.lease("w1")
    assert q.progress("j0", 1) == Continue()  # tail_widening off


def test_a_widened_worker_shrinks_back_when_it_leases_again():
    q = _two_workers(jobs=3)
    q.lease("w0")
    q.lease("w1")
    q.lease("w2")
    q.complete("j1")
    assert q.lease("w1") == Retire()
    assert q.progress("j0", 1) == Widen((0, 1, 2, 3))
    q.release_worker("w2")  # j2 goes back to the queue
    q.complete("j0")
    q.lease("w0")
    assert q.cores_of("w0") == (0, 1)


def _sized(sizes: list[int]) -> list[Job]:
    return [dataclasses.replace(j, cores=c) for j, c in zip(_jobs(len(sizes)), sizes, strict=True)]


def _one_core_workers(q: JobQueue, n: int, node: str = "n") -> None:
    for i in range(n):
        q.register(f"w{i}", node, (i,))


def test_a_lease_grants_the_job_its_cores_worker_group_first():
    q = JobQueue(_sized([2, 1, 1]))
    _one_core_workers(q, 4)
    grant = q.lease("w1")
    assert (grant.job.job_id, grant.cores) == ("j0", (0, 1))  # its own core 1, then core 0
    assert q.lease("w0").cores == (2,)  # core 0 is taken: the lowest free one
    assert q.lease("w3").cores == (3,)
    assert q.free_cores("n") == [] and q.cores_of("w1") == (0, 1)


def test_jobs_wait_for_cores_and_never_share_one():
    q = JobQueue(_sized([4, 4, 1]))
    _one_core_workers(q, 4)
    assert q.lease("w0").cores == (0, 1, 2, 3)
    # j1 needs 4 cores and j2 one: none is free, so both wait
    assert q.lease("w1") == Wait(WAIT_SECONDS)
    q.complete("j0")
    assert q.lease("w0").job.job_id == "j1"  # w0 gave its cores back: the longest job fits
    assert q.lease("w2") == Wait(WAIT_SECONDS)
    q.complete("j1")
    assert q.lease("w2").job.job_id == "j2"
    assert q.lease("w0") == q.lease("w1") == Retire()  # nothing pending: retire


def test_smaller_jobs_fill_cores_a_wide_job_cannot_use():
    q = JobQueue(_sized([2, 4, 1, 1]))
    _one_core_workers(q, 4)
    assert q.lease("w0").job.job_id == "j0"  # cores 0, 1
    assert q.lease("w2").job.job_id == "j2"  # j1 needs 4, 2 are free: first fit is j2
    assert q.lease("w3").job.job_id == "j3"
    assert q.lease("w1") == Wait(WAIT_SECONDS)
    held = [q.cores_of(w) for w in ("w0", "w2", "w3")]
    assert sorted(c for cores in held for c in cores) == [0, 1, 2, 3]


def test_a_worker_retires_when_no_pending_job_fits_its_node():
    q = JobQueue(_sized([4, 1]))
    q.register("small", "two-core", (0,))
    q.register("small2", "two-core", (1,))
    q.register("big", "four-core", (0, 1, 2, 3))
    assert q.lease("small").job.job_id == "j1"  # j0 can never fit two cores: j1 goes
    assert q.lease("small2") == Retire()  # only j0 is left and it needs 4 cores
    assert q.lease("big").cores == (0, 1, 2, 3)


def test_a_dead_workers_cores_are_free_for_the_others():
    q = JobQueue(_sized([2, 2]))
    _one_core_workers(q, 2)
    assert q.lease("w0").cores == (0, 1)
    assert q.lease("w1") == Wait(WAIT_SECONDS)
    q.release_worker("w0")  # j0 goes back to the front
    grant = q.lease("w1")
    assert (grant.job.job_id, grant.attempt, grant.cores) == ("j0", 2, (0, 1))


@pytest.mark.parametrize(
    ("setting", "jobs", "cores", "expected"),
    [("auto", 30, 2, 1), ("auto", 4, 16, 4), ("auto", 3, 16, 5), (2, 1, 16, 2)],
)
def test_resolve_cores_per_job(setting, jobs, cores, expected):
    assert resolve_cores_per_job(setting, jobs, cores) == expected


def test_core_groups_are_disjoint_and_cover_whole_groups_only():
    groups = core_groups(list(range(7)), 2)
    assert groups == [(0, 1), (2, 3), (4, 5)]
    with pytest.raises(SpecError, match="at most 8"):
        check_cores_per_job(9, [4, 8])


def test_job_is_a_frozen_value():
    job = _jobs(1)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.cost = 3  # type: ignore[misc]


def test_a_lease_expires_after_its_allowance_without_progress():
    from raynn.kfold import leases as q_mod

    q = JobQueue(_jobs(2))
    q.lease("w0")
    q.lease("w1")
    assert q.allowance(_jobs(1)[0]) == q_mod.LEASE_UNKNOWN_SECONDS  # nothing known yet
    assert q.expired() == []
    q._leases.held["j0"].renewed -= 2 * q_mod.LEASE_UNKNOWN_SECONDS  # j0 silent for two hours
    (job_id, worker, idle), *rest = q.expired()
    assert (job_id, worker, rest) == ("j0", "w0", []) and idle > q_mod.LEASE_UNKNOWN_SECONDS
    # j1 ends an epoch that took 10 s: mlp's allowance is now 10 x 10 s
    q._leases.held["j1"].renewed -= 10
    q.progress("j1", 1)
    assert q.allowance(_jobs(1)[0]) == pytest.approx(100, rel=0.01)
    # the caller kills w0; its death puts j0 back for a second attempt
    q.release_worker("w0")
    grant = q.lease("w2")
    assert (grant.job, grant.attempt) == (q._jobs["j0"], 2)


def test_a_training_step_heartbeat_keeps_a_lease_alive_between_epoch_ends():
    q = JobQueue(_jobs(3), lease_timeout=30)
    for worker in ("w0", "w1", "w2"):
        q.lease(worker)
    for lease in q._leases.held.values():
        lease.renewed -= 60  # leased a minute ago; no epoch has ended since
    q.heartbeat("j0", "w0")  # j0 took a training step just now
    q.heartbeat("j1", "w0")  # a late beat from a worker that does not hold j1 counts for nothing
    assert sorted((job, worker) for job, worker, _ in q.expired()) == [("j1", "w1"), ("j2", "w2")]
    assert all(idle > 30 for _, _, idle in q.expired())
    q.heartbeat("gone", "w0")  # a job the queue no longer leases: ignored


def test_an_exhausted_job_says_why_and_on_which_attempt():
    q = JobQueue(_jobs(2), max_attempts=2)
    for attempt, worker in enumerate(("w0", "w1"), start=1):
        grant = q.lease(worker)
        assert (grant.job, grant.attempt) == (q._jobs["j0"], attempt)
        q.release_worker(worker, reason="node lost")
    q.lease("w2")
    q.release_worker("w2")  # j1, attempt 1: runs again
    q.lease("w3")
    q.release_worker("w3")
    assert q.failures() == {
        "j0": "node lost on attempt 2 (max_attempts reached)",
        "j1": "worker died on attempt 2 (max_attempts reached)",
    }


def test_a_probed_job_gets_its_allowance_from_the_probe_and_a_fixed_timeout_wins():
    probed = dataclasses.replace(_jobs(1)[0], cost=50.0, max_threads=1)  # 50 s at one thread
    assert JobQueue([probed]).allowance(probed) == 100.0  # 10 x (50 s / 5 epochs)
    quick = dataclasses.replace(probed, cost=1.0)
    assert JobQueue([quick]).allowance(quick) == 60.0  # at least a minute
    assert JobQueue([probed], lease_timeout=7).allowance(probed) == 7.0


def test_one_restart_policy_decides_retries_and_replacements():
    from raynn.placement.restarts import RestartPolicy

    jobs = RestartPolicy.for_jobs(jobs=2, max_attempts=2)
    assert (jobs.retry(1), jobs.retry(2)) == (True, False)  # the second attempt was the last
    assert [jobs.replace() for _ in range(5)] == [True] * 4 + [False]  # 2 jobs x 2 attempts
    assert not RestartPolicy.for_jobs(3, 3).replace(work_left=False) and jobs.restarts == 4
    rounds = RestartPolicy.for_rounds(max_restarts=1)
    assert rounds.retry(99) and rounds.may_replace()
    assert (rounds.replace(), rounds.replace(), rounds.restarts) == (True, False, 1)
    # the queue asks the same policy: a dead worker's job runs again until max_attempts
    q = JobQueue(_jobs(1), max_attempts=2)
    q.lease("w0")
    assert q.release_worker("w0") == [] and q.lease("w1").attempt == 2
    assert [(j.job_id, a) for j, a in q.release_worker("w1")] == [("j0", 2)]


def test_the_messages_are_frozen_values_that_cross_a_pipe():
    job = _jobs(1)[0]
    messages = [Grant(job, 1, 0.5, (0, 1)), Wait(0.2), Retire(), Continue(), Widen((2, 3))]
    for message in [*messages, Stop("raced out: why")]:
        assert pickle.loads(pickle.dumps(message)) == message
    with pytest.raises(dataclasses.FrozenInstanceError):
        Wait(0.2).seconds = 1.0  # type: ignore[misc]
    assert Retire() == Retire() and Continue() != Retire() and Widen((1,)) != Widen((1, 2))


def test_the_queue_answers_only_typed_messages():
    q = JobQueue(_sized([2, 2]), tail_widening=True)
    _one_core_workers(q, 2)
    assert isinstance(q.lease("w0"), Grant) and isinstance(q.lease("w1"), Wait)
    assert q.progress("unknown", 1) == Continue()  # a job it does not lease: train on
    q.release_worker("w1")  # w1 is gone: core 1 is free, j1 still pending
    assert q.progress("j0", 1) == Continue()  # no widening while jobs are pending
    grant = q.lease("w9")  # an unregistered worker (the serial one): the next job, no cores
    assert isinstance(grant, Grant) and (grant.job.job_id, grant.cores) == ("j1", ())
    assert q.lease("w9") == Retire()


class _ScriptedQueue:
    """A queue that answers what it is told to, in order."""

    def __init__(self, leases: list, progress: list | None = None) -> None:
        self.leases, self.answers, self.calls = leases, progress or [], []

    def lease(self, worker: str):
        self.calls.append(("lease", worker))
        return self.leases.pop(0)

    def progress(self, job_id: str, epoch: int, loss: float | None):
        return self.answers.pop(0)


def test_the_worker_loop_decodes_the_queues_answers_by_type(monkeypatch):
    from raynn.kfold.racing import RacedOut
    from raynn.kfold.workers import CoreGroupWorker, WorkerContext

    queue = _ScriptedQueue([Wait(0.0), Wait(0.0), Retire()])
    worker = CoreGroupWorker(WorkerContext("w0", queue, collector=None), data=None)
    assert worker.run() == 0 and queue.calls == [("lease", "w0")] * 3 and not queue.leases
    # an epoch end: Continue trains on, Widen re-pins, Stop raises at the boundary
    repinned: list[tuple[int, ...]] = []
    monkeypatch.setattr(worker, "_repin", repinned.append)
    worker.cores = (0,)
    queue.answers = [Continue(), Widen((0, 1)), Stop("raced out: worse")]
    worker._on_epoch("j0", 1, 5)
    worker._on_epoch("j0", 2, 5)
    with pytest.raises(RacedOut) as stop:
        worker._on_epoch("j0", 3, 5)
    assert repinned == [(0, 1)] and (stop.value.reason, stop.value.epoch) == ("raced out: worse", 3)
