"""train_job: determinism, checkpoint resume, corrupt checkpoints, NaN loss."""

from __future__ import annotations

import math

import pytest

from raynn.checkpoint import decode, encode
from raynn.errors import CheckpointError
from raynn.kfold import prepare
from tests.conftest import make_spec


class MemoryStore:
    """A dict-backed checkpoint store that can stop a job after a given epoch."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.blobs: dict[str, bytes] = {}
        self.stop_after = stop_after

    def load_checkpoint(self, job_id):
        return self.blobs.get(job_id)

    def save_checkpoint(self, job_id, blob):
        self.blobs[job_id] = blob
        if self.stop_after is not None and decode(blob)["epoch"] >= self.stop_after:
            raise KeyboardInterrupt("simulated crash after checkpoint")


def _metrics(result):
    return [(r.loss, r.accuracy, r.val_loss, r.val_accuracy, r.lr) for r in result.history] + [
        (result.val_loss, result.val_accuracy, result.test_loss, result.test_accuracy)
    ]


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    spec = make_spec(
        tmp_path_factory.mktemp("t"), models=["lenet"], schedulers=["warm"], training={"epochs": 4}
    )
    return prepare(spec)


def test_same_job_twice_is_bit_identical(plan):
    from raynn.training import train_job

    job = plan.jobs[0]
    a, b = train_job(job, plan.data, threads=1), train_job(job, plan.data, threads=1)
    assert a.status == "ok" and _metrics(a) == _metrics(b)
    assert a.threads == 1 and len(a.history) == 4
    assert 0 < a.val_accuracy <= 1 and len(a.per_class_accuracy) == 10


def test_resume_from_checkpoint_matches_uninterrupted_run(plan):
    from raynn.training import train_job

    job = plan.jobs[1]
    full = train_job(job, plan.data, threads=1)
    store = MemoryStore(stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        train_job(job, plan.data, threads=1, checkpoints=store)
    store.stop_after = None
    resumed = train_job(job, plan.data, threads=1, checkpoints=store, attempt=2)
    assert resumed.resumed_from_epoch == 2 and resumed.attempt == 2
    assert _metrics(resumed) == _metrics(full)


def test_corrupt_checkpoint_is_detected_and_job_restarts(plan):
    from raynn.training import train_job

    job = plan.jobs[0]
    store = MemoryStore(stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        train_job(job, plan.data, threads=1, checkpoints=store)
    blob = bytearray(store.blobs[job.job_id])
    blob[-100] ^= 0xFF
    with pytest.raises(CheckpointError, match="checksum"):
        decode(bytes(blob))
    store.blobs[job.job_id], store.stop_after = bytes(blob), None
    result = train_job(job, plan.data, threads=1, checkpoints=store)
    assert result.status == "ok" and result.resumed_from_epoch == 0
    assert _metrics(result) == _metrics(train_job(job, plan.data, threads=1))


def test_checkpoint_roundtrip_and_truncation():
    blob = encode({"job_id": "x", "epoch": 3})
    assert decode(blob)["epoch"] == 3
    with pytest.raises(CheckpointError):
        decode(blob[:10])


def test_nan_loss_fails_the_job_with_its_reason(tmp_path):
    from raynn.training import train_job

    spec = make_spec(tmp_path, models=["mlp"], optimizer={"name": "sgd", "lr": 1e30})
    plan = prepare(spec)
    result = train_job(plan.jobs[0], plan.data, threads=1)
    assert result.status == "failed"
    assert "loss became" in result.error and "optimizer.lr" in result.error
    assert math.isnan(result.val_accuracy)


@pytest.mark.parametrize("scheduler", ["cosine", "warm", "step", "reduce", "onecycle", "none"])
def test_every_scheduler_trains(tmp_path, scheduler):
    from raynn.training import train_job

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
    from raynn.training import train_job

    spec = make_spec(tmp_path, models=["mlp"], optimizer=optimizer, training={"epochs": 2})
    plan = prepare(spec)
    result = train_job(plan.jobs[0], plan.data, threads=1)
    assert result.status == "ok" and result.val_accuracy > 0.3


def test_user_model_by_module_path(tmp_path):
    from raynn.training import train_job

    spec = make_spec(tmp_path, models=["raynn.models.mlp:mlp"], training={"epochs": 1})
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
