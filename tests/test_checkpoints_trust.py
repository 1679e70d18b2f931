"""A checkpoint that cannot be loaded is set aside, never a dead end (issue 21, item 2).

A K-fold job whose checkpoint no longer fits its model (the model's code changed), whose
payload ``torch.load(weights_only=True)`` refuses, or that is corrupt, moves it under the run
directory's ``damaged/``, says so in one line and trains from scratch, to the same numbers as
a job that never had a checkpoint. The HOGWILD parameter server does the same with its own.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest
import torch

from raynn.cli import main
from raynn.core.checkpoint import decode, encode
from raynn.hogwild.server import ParameterServer
from raynn.kfold.collector import ResultsCollector
from raynn.kfold.runner import prepare, run
from raynn.kfold.train import train_job
from raynn.runs.files import CheckpointDir, file_stem
from tests.conftest import make_spec
from tests.tables import drop_rows
from tests.test_training import MemoryStore


class Opaque:
    """Not a tensor, not a plain container: ``torch.load(weights_only=True)`` refuses it."""

    def __init__(self) -> None:
        self.value = 1


def _metrics(result):
    return [(r.loss, r.val_loss, r.val_accuracy) for r in result.history] + [
        (result.val_loss, result.val_accuracy, result.test_loss)
    ]


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    spec = make_spec(
        tmp_path_factory.mktemp("trust"),
        models=["mlp"],
        training={"epochs": 3, "checkpoint_seconds": 1e-9},
    )
    return prepare(spec)


@pytest.fixture(scope="module")
def saved(plan):
    """The first job's checkpoint after epoch 1, decoded, and the job's uninterrupted metrics."""
    job = plan.jobs[0]
    store = MemoryStore(resume_at=1)
    full = train_job(job, plan.data, threads=1, checkpoints=store)
    return decode(store.load_checkpoint(job.job_id)), _metrics(full)


def _changed_model(state):  # a layer added to the model's code since
    state["model"] = {**state["model"], "extra.weight": torch.zeros(3)}
    return encode(state)


def _shapes_changed(state):  # a layer widened
    key = next(iter(state["model"]))
    state["model"] = {**state["model"], key: torch.zeros(7, 7)}
    return encode(state)


def _optimizer_garbled(state):  # the model's weights load, then the optimizer's do not
    state["optimizer"] = {"state": {}, "param_groups": [{"params": [0]}]}
    return encode(state)


def _refused_payload(state):  # a valid header whose payload weights_only refuses
    state["extra"] = Opaque()
    return encode(state)


def _corrupt(state):
    blob = bytearray(encode(state))
    blob[len(blob) // 2] ^= 0xFF
    return bytes(blob)


def _no_tensor(state):  # a valid header over a payload that is not torch's at all
    payload = b"PK\x03\x04 not a zip archive"
    return b"RAYNNCK1" + hashlib.sha256(payload).digest() + payload


CASES = {
    "changed_model": (_changed_model, "Unexpected key(s)"),
    "shapes_changed": (_shapes_changed, "size mismatch"),
    "optimizer_garbled": (_optimizer_garbled, "Error"),
    "refused_payload": (_refused_payload, "weights_only"),
    "corrupt": (_corrupt, "checksum mismatch"),
    "not_torch": (_no_tensor, "cannot be read"),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", list(CASES))
def test_a_checkpoint_that_cannot_be_loaded_is_set_aside_and_the_job_trains_afresh(
    case, plan, saved, tmp_path, capsys
):
    make, reason = CASES[case]
    state, uninterrupted = saved
    job = plan.jobs[0]
    store = CheckpointDir(tmp_path)
    bad = make({**state})
    store.save_checkpoint(job.job_id, bad)
    capsys.readouterr()

    result = train_job(job, plan.data, threads=1, checkpoints=store)

    assert result.status == "ok" and result.resumed_from_epoch == 0
    assert len(result.history) == 3
    assert _metrics(result) == uninterrupted  # as if it never had a checkpoint
    aside = tmp_path / "damaged" / f"checkpoints-{file_stem(job.job_id)}.ckpt"
    assert aside.read_bytes() == bad  # kept, byte for byte
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert job.job_id in lines[0] and reason in lines[0] and str(aside) in lines[0]
    assert "training afresh" in lines[0]


@pytest.mark.timeout(120)
def test_a_second_bad_checkpoint_keeps_the_first_one_set_aside(plan, saved, tmp_path):
    state, _ = saved
    job = plan.jobs[0]
    store = CheckpointDir(tmp_path)
    first, second = _changed_model({**state}), _refused_payload({**state})
    store.save_checkpoint(job.job_id, first)
    assert store.set_aside(job.job_id) is not None
    store.save_checkpoint(job.job_id, second)
    moved = store.set_aside(job.job_id)
    name = f"checkpoints-{file_stem(job.job_id)}.ckpt"
    assert moved == str(tmp_path / "damaged" / f"{name}.1")
    assert (tmp_path / "damaged" / name).read_bytes() == first
    assert (tmp_path / "damaged" / f"{name}.1").read_bytes() == second
    assert store.set_aside(job.job_id) is None and store.load_checkpoint(job.job_id) is None


@pytest.mark.timeout(300)
def test_resume_with_a_checkpoint_of_a_changed_model_finishes_the_job(tmp_path, capfd):
    """``raynn run --resume`` (serial: the collector's store) after the model's code changed."""
    spec = make_spec(tmp_path, models=["mlp"], training={"epochs": 3, "checkpoint_seconds": 1e-9})
    first = run(spec, executor="serial", progress=False)
    plan = prepare(spec)
    job = plan.jobs[0]
    store = MemoryStore(resume_at=1)
    train_job(job, plan.data, threads=1, checkpoints=store)
    bad = _changed_model(decode(store.load_checkpoint(job.job_id)))
    ResultsCollector(first.run_dir).save_checkpoint(job.job_id, bad)
    drop_rows(first.run_dir, [job.job_id])  # as if it died
    capfd.readouterr()

    argv = ["run", "--resume", str(first.run_dir), "--serial", "--threads", "1", "--no-progress"]
    assert main(argv) == 0

    jobs = pd.read_parquet(first.run_dir / "jobs").set_index("job_id")
    assert jobs.loc[job.job_id, "status"] == "ok"
    assert jobs.loc[job.job_id, "resumed_from_epoch"] == 0
    aside = first.run_dir / "damaged" / f"checkpoints-{file_stem(job.job_id)}.ckpt"
    assert aside.read_bytes() == bad
    said = [line for line in capfd.readouterr().err.splitlines() if "cannot be loaded" in line]
    assert len(said) == 1 and job.job_id in said[0] and "Unexpected key(s)" in said[0]


# -- the HOGWILD parameter server -----------------------------------------------------------
def _server_blob(payload: bytes) -> bytes:
    return b"RAYNNPS1" + hashlib.sha256(payload).digest() + payload


def _npz(meta) -> bytes:
    buf = io.BytesIO()
    header = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(buf, weights=np.ones(3, np.float32), meta=header)
    return buf.getvalue()


SERVER_CASES = {
    "not_a_zip": (b"PK\x03\x04 truncated zip", "cannot be read"),
    "header_lacks_keys": (_npz({"lo": 0, "version": 1}), "lacks or garbles steps"),
    "header_not_an_object": (_npz([1, 2]), "not a JSON object"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(SERVER_CASES))
def test_a_server_checkpoint_that_cannot_be_loaded_is_set_aside(case, tmp_path, capsys):
    payload, reason = SERVER_CASES[case]
    path = tmp_path / "run" / "checkpoints" / "server-0.ckpt"
    path.parent.mkdir(parents=True)
    blob = _server_blob(payload)
    path.write_bytes(blob)
    capsys.readouterr()

    server = ParameterServer(np.full(3, 9, np.float32), checkpoint_path=str(path))

    assert server.restored_from is None and np.allclose(server.w, 9)
    aside = tmp_path / "run" / "damaged" / "checkpoints-server-0.ckpt"
    assert aside.read_bytes() == blob and not path.exists()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and reason in lines[0] and str(aside) in lines[0], lines


@pytest.mark.timeout(60)
def test_a_server_checkpoint_of_another_model_is_set_aside(tmp_path, capsys):
    path = tmp_path / "run" / "checkpoints" / "server-0.ckpt"
    old = ParameterServer(np.zeros(5, np.float32), checkpoint_path=str(path))
    assert old.checkpoint()
    blob = path.read_bytes()
    capsys.readouterr()

    server = ParameterServer(np.full(3, 9, np.float32), checkpoint_path=str(path))

    assert server.restored_from is None and np.allclose(server.w, 9)
    assert (tmp_path / "run" / "damaged" / "checkpoints-server-0.ckpt").read_bytes() == blob
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds 5 values" in err
