"""train_job: determinism, checkpoint resume, corrupt checkpoints, NaN loss."""

from __future__ import annotations

import math
import re
import threading

import pytest

from raynn.core.checkpoint import decode, encode
from raynn.errors import CheckpointError
from raynn.kfold.runner import prepare
from tests.conftest import make_spec


class MemoryStore:
    """A dict-backed checkpoint store that keeps every checkpoint it was given.

    ``load_checkpoint`` returns the one taken after epoch ``resume_at`` (the latest when
    None), as if the job had died right after it.
    """

    def __init__(self, resume_at: int | None = None) -> None:
        self.saved: dict[str, dict[int, bytes]] = {}
        self.resume_at = resume_at
        self.threads: set[str] = set()

    @property
    def blobs(self) -> dict[str, bytes]:
        return {j: by_epoch[max(by_epoch)] for j, by_epoch in self.saved.items()}

    def load_checkpoint(self, job_id):
        by_epoch = self.saved.get(job_id, {})
        if not by_epoch:
            return None
        return by_epoch[self.resume_at if self.resume_at is not None else max(by_epoch)]

    def save_checkpoint(self, job_id, blob):
        self.threads.add(threading.current_thread().name)
        self.saved.setdefault(job_id, {})[decode(blob)["epoch"]] = blob


def _metrics(result):
    return [(r.loss, r.accuracy, r.val_loss, r.val_accuracy, r.lr) for r in result.history] + [
        (result.val_loss, result.val_accuracy, result.test_loss, result.test_accuracy)
    ]


EVERY_EPOCH = {"epochs": 4, "checkpoint_seconds": 1e-9}


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    spec = make_spec(
        tmp_path_factory.mktemp("t"), models=["lenet"], schedulers=["warm"], training=EVERY_EPOCH
    )
    return prepare(spec)


def test_same_job_twice_is_bit_identical(plan):
    from raynn.kfold.train import train_job

    job = plan.jobs[0]
    a, b = train_job(job, plan.data, threads=1), train_job(job, plan.data, threads=1)
    assert a.status == "ok" and _metrics(a) == _metrics(b)
    assert a.threads == 1 and len(a.history) == 4
    assert 0 < a.val_accuracy <= 1 and len(a.per_class_accuracy) == 10


def test_resume_from_checkpoint_matches_uninterrupted_run(plan):
    from raynn.kfold.train import train_job

    job = plan.jobs[1]
    store = MemoryStore()
    full = train_job(job, plan.data, threads=1, checkpoints=store)
    # a checkpoint after every epoch but the last, saved off the training thread
    assert sorted(store.saved[job.job_id]) == [1, 2, 3]
    assert store.threads == {"raynn-checkpoint"}
    store.resume_at = 2  # as if the job had died during epoch 3
    resumed = train_job(job, plan.data, threads=1, checkpoints=store, attempt=2)
    assert resumed.resumed_from_epoch == 2 and resumed.attempt == 2
    assert _metrics(resumed) == _metrics(full)
    assert _metrics(full) == _metrics(train_job(job, plan.data, threads=1))


def test_checkpoints_follow_training_time(tmp_path):
    from raynn.kfold.train import train_job

    for seconds, expected in ((0.0, []), (1e9, []), (1e-9, [1, 2])):
        spec = make_spec(
            tmp_path,
            models=["mlp"],
            training={"epochs": 3, "checkpoint_seconds": seconds},
        )
        plan = prepare(spec)
        store = MemoryStore()
        train_job(plan.jobs[0], plan.data, threads=1, checkpoints=store)
        assert sorted(store.saved.get(plan.jobs[0].job_id, {})) == expected, seconds


def test_each_epoch_validates_once_and_the_test_split_once(plan, monkeypatch):
    import raynn.kfold.train

    calls = []
    real = raynn.kfold.train.evaluate

    def counting(model, x, y, idx, *rest):
        calls.append(len(y) if idx is None else len(idx))
        return real(model, x, y, idx, *rest)

    monkeypatch.setattr(raynn.kfold.train, "evaluate", counting)
    result = raynn.kfold.train.train_job(plan.jobs[0], plan.data, threads=1)
    val, test = len(plan.data.folds[0][1]), len(plan.data.y_test)
    assert calls == [val] * 4 + [test]  # the last epoch's validation is the job's
    assert result.val_loss == result.history[-1].val_loss


def test_a_thread_schedule_replays_a_widened_job(plan):
    from raynn.kfold.train import train_job

    job = plan.jobs[0]
    widened = train_job(job, plan.data, threads=[1, 1, 2, 2])
    assert [r.threads for r in widened.history] == [1, 1, 2, 2]
    again = train_job(job, plan.data, threads=[1, 1, 2, 2])
    assert _metrics(widened) == _metrics(again)


def test_corrupt_checkpoint_is_detected_and_job_restarts(plan):
    from raynn.kfold.train import train_job

    job = plan.jobs[0]
    store = MemoryStore(resume_at=2)
    train_job(job, plan.data, threads=1, checkpoints=store)
    blob = bytearray(store.saved[job.job_id][2])
    blob[-100] ^= 0xFF
    with pytest.raises(CheckpointError, match="checksum"):
        decode(bytes(blob))
    store.saved[job.job_id] = {2: bytes(blob)}
    result = train_job(job, plan.data, threads=1, checkpoints=store)
    assert result.status == "ok" and result.resumed_from_epoch == 0
    assert _metrics(result) == _metrics(train_job(job, plan.data, threads=1))


def test_checkpoint_roundtrip_and_truncation():
    blob = encode({"job_id": "x", "epoch": 3})
    assert decode(blob)["epoch"] == 3
    with pytest.raises(CheckpointError):
        decode(blob[:10])


def test_nan_loss_fails_the_job_with_its_reason(tmp_path):
    from raynn.kfold.train import train_job

    spec = make_spec(tmp_path, models=["mlp"], optimizer={"name": "sgd", "lr": 1e30})
    plan = prepare(spec)
    result = train_job(plan.jobs[0], plan.data, threads=1)
    assert result.status == "failed"
    assert "loss became" in result.error and "optimizer.lr" in result.error
    assert re.search(r"at epoch 1, batch [0-9]+;", result.error)
    assert math.isnan(result.val_accuracy)


@pytest.mark.parametrize("scheduler", ["cosine", "warm", "step", "reduce", "onecycle", "none"])
def test_every_scheduler_trains(tmp_path, scheduler):
    from raynn.kfold.train import train_job

    spec = make_spec(tmp_path, models=["mlp"], schedulers=[scheduler], training={"epochs": 2})
    plan = prepare(spec)
    result = train_job(plan.jobs[0], plan.data, threads=1)
    assert result.status == "ok" and result.val_accuracy > 0.3
    assert all(r.lr > 0 for r in result.history)


@pytest.mark.parametrize(
    "optimizer",
    [
        {"name": "sgd", "lr": 0.05, "nesterov": True},
        {"name": "adam", "lr": 0.003},
        {"name": "adamw", "lr": 0.003},
    ],
)
def test_every_optimizer_trains(tmp_path, optimizer):
    from raynn.kfold.train import train_job

    spec = make_spec(tmp_path, models=["mlp"], optimizer=optimizer, training={"epochs": 2})
    plan = prepare(spec)
    result = train_job(plan.jobs[0], plan.data, threads=1)
    assert result.status == "ok" and result.val_accuracy > 0.3


def test_user_model_by_module_path(tmp_path):
    from raynn.kfold.train import train_job

    spec = make_spec(tmp_path, models=["raynn.core.models.mlp:mlp"], training={"epochs": 1})
    plan = prepare(spec)
    assert plan.jobs[0].job_id.startswith("mlp-")
    assert train_job(plan.jobs[0], plan.data, threads=1).status == "ok"


def test_jobs_are_longest_first_with_stable_seeds(tmp_path):
    spec = make_spec(tmp_path, models=["mlp", "lenet"], schedulers=["cosine", "warm"])
    jobs = prepare(spec).jobs
    costs = [j.cost for j in jobs]
    assert costs == sorted(costs, reverse=True)
    assert len({j.seed for j in jobs}) == len(jobs)
    again = {j.job_id: j.seed for j in prepare(spec).jobs}
    assert all(again[j.job_id] == j.seed for j in jobs)


def test_an_epoch_is_reported_once_the_checkpoint_before_it_is_saved(plan):
    from raynn.kfold.train import train_job

    job = plan.jobs[0]
    store = MemoryStore()
    seen = []

    def on_epoch(job_id, epoch, epochs, val_loss):
        seen.append((job_id, epoch, epochs, val_loss, sorted(store.saved.get(job_id, {}))))

    result = train_job(job, plan.data, threads=1, checkpoints=store, on_epoch=on_epoch)
    assert [s[:4] for s in seen] == [(job.job_id, r.epoch, 4, r.val_loss) for r in result.history]
    # the worker renews its lease with epoch k + 1 only once checkpoint k is on disk
    assert all(epoch - 1 in saved for _, epoch, _, _, saved in seen[1:])
    assert sorted(store.saved[job.job_id]) == [1, 2, 3]
