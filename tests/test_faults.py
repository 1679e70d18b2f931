"""Reliability: each failure DESIGN.md section 5 names, and what survives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from raynn.cli import main
from raynn.errors import OutputError
from raynn.kfold.collector import ResultsCollector
from raynn.kfold.executors.ray_executor import RayExecutor
from raynn.kfold.executors.serial import SerialExecutor
from raynn.kfold.runner import run
from raynn.runs.files import CheckpointDir
from raynn.runs.results import read_table
from tests.conftest import REPO, make_spec, start_cluster
from tests.executors import beside, leases, wait_for
from tests.tables import drop_rows
from tests.test_training import MemoryStore

SLOW_DATA = {"name": "synthetic", "shape": [1, 24, 24], "samples": 2400, "limit": None}


@pytest.fixture
def cluster():
    """A head node with one CPU; tests add and remove worker nodes."""
    import ray

    c = start_cluster(num_cpus=1)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.mark.ray
def test_a_node_removed_mid_run_costs_only_its_running_job(cluster, tmp_path):

    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    spec = make_spec(
        tmp_path,
        models=["lenet"],
        folds=4,
        dataset=SLOW_DATA,
        training={"epochs": 4, "checkpoint_seconds": 1e-9},
        scheduling={"probe": False},
    )
    executor = RayExecutor(address=cluster.address)
    removed: list[str] = []

    def remove_when_busy(ended: threading.Event) -> None:
        def busy_on_node() -> bool:
            current = getattr(executor, "current", None)
            if current is None:
                return False
            on_node = {
                m.worker_id
                for m in list(current.group.members.values())
                if m.slot[0].node_id == node.node_id
            }
            # epoch 2 is reported after the epoch-1 checkpoint is saved
            return any(w in on_node and epoch >= 2 for w, _, epoch in leases(executor).values())

        if wait_for(busy_on_node, stop=ended):
            cluster.remove_node(node)
            removed.append(node.node_id)

    with beside(remove_when_busy):
        result = run(spec, executor=executor, progress=False)
    assert removed, "the worker node never ran a job"
    jobs = pd.read_parquet(result.run_dir / "jobs")
    assert result.ok and len(jobs) == 4 and (jobs["status"] == "ok").all()
    assert jobs["job_id"].is_unique and (jobs["attempt"] == 2).sum() == 1
    retried = jobs[jobs["attempt"] == 2].iloc[0]
    assert retried["resumed_from_epoch"] >= 1  # resumed from the checkpoint on the driver


@pytest.mark.ray
def test_a_node_that_joins_mid_run_gets_workers(cluster, tmp_path):
    spec = make_spec(
        tmp_path,
        models=["lenet"],
        folds=8,  # 8 jobs of ~3 s on the head's one core: the run outlasts the node's start
        dataset=SLOW_DATA,
        training={"epochs": 6},
        scheduling={"probe": False},
    )
    executor = RayExecutor(address=cluster.address)
    results = []
    thread = threading.Thread(
        target=lambda: results.append(run(spec, executor=executor, progress=False)), daemon=True
    )
    thread.start()  # the run goes on in a thread: Cluster.add_node needs the main thread
    wait_for(lambda: getattr(executor, "current", None) is not None or not thread.is_alive())
    assert getattr(executor, "current", None) is not None, "the run ended before it began"
    cluster.add_node(num_cpus=1)
    thread.join()
    (result,) = results
    jobs = pd.read_parquet(result.run_dir / "jobs")
    assert result.ok and len(jobs) == 8 and (jobs["status"] == "ok").all()
    assert jobs["node"].nunique() == 2, jobs["node"].tolist()


def _rows_written(runs: Path) -> int:
    return sum(len(read_table(run_dir, "jobs")) for run_dir in runs.glob("*/"))


@pytest.mark.parametrize("how", [["--serial", "--threads", "1"], ["--executor", "local"]])
def test_driver_killed_then_resume_finishes_only_the_missing_jobs(tmp_path, how):
    spec_path = tmp_path / "spec.json"
    raw = make_spec(
        tmp_path, models=["lenet"], folds=4, dataset=SLOW_DATA, training={"epochs": 3}
    ).to_dict()
    spec_path.write_text(json.dumps(raw))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "raynn", "run", str(spec_path), *how, "--no-progress"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    runs = tmp_path / "runs"
    wait_for(lambda: _rows_written(runs) or proc.poll() is not None)
    assert _rows_written(runs), "the driver ended before it wrote a job"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (run_dir,) = list(runs.iterdir())
    before = read_table(run_dir, "jobs")  # the rows in the killed driver's journal too
    assert 1 <= len(before) < 4
    assert main(["run", "--resume", str(run_dir), *how, "--no-progress"]) == 0
    after = pd.read_parquet(run_dir / "jobs")
    assert len(after) == 4 and after["job_id"].is_unique and (after["status"] == "ok").all()
    kept = after.set_index("job_id").loc[before["job_id"], "end_time"]
    assert (kept.to_numpy() == before["end_time"].to_numpy()).all()  # not run again
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["runs"][0]["status"] == "running"  # the killed driver never closed it
    assert meta["runs"][1]["status"] == "completed" and meta["runs"][1]["jobs"] == 4 - len(before)


def test_a_partly_failed_run_exits_1_and_keeps_the_good_jobs(tmp_path, capsys):
    # the README: "A run whose jobs partly failed (for example NaN loss) finishes the others
    # and exits with code 1."
    boom = {"name": "tests.helpers:exploding_mlp", "label": "boom"}
    spec = make_spec(tmp_path, models=["mlp", boom], training={"epochs": 1})
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec.to_dict()))
    code = main(["run", str(spec_path), "--serial", "--threads", "1", "--no-progress"])
    assert code == 1, capsys.readouterr().err
    (run_dir,) = (tmp_path / "runs").iterdir()
    jobs = pd.read_parquet(run_dir / "jobs")
    assert len(jobs) == 4 and f"results: {run_dir}" in capsys.readouterr().out
    assert (jobs.loc[jobs["model"] == "mlp", "status"] == "ok").all()
    assert (jobs.loc[jobs["model"] == "boom", "status"] == "failed").all()


def test_a_corrupt_checkpoint_restarts_the_job_from_scratch(tmp_path):
    spec = make_spec(tmp_path, models=["mlp"], training={"epochs": 4, "checkpoint_seconds": 1e-9})
    first = run(spec, executor="serial", progress=False)
    jobs = pd.read_parquet(first.run_dir / "jobs").set_index("job_id")
    good, bad = sorted(jobs.index)
    from raynn.kfold.runner import prepare
    from raynn.kfold.train import train_job

    plan = prepare(spec)
    by_id = {j.job_id: j for j in plan.jobs}
    collector = ResultsCollector(first.run_dir)
    for job_id in (good, bad):  # as if the driver died after epoch 2 of both
        store = MemoryStore(resume_at=2)
        train_job(by_id[job_id], plan.data, threads=1, checkpoints=store)
        collector.save_checkpoint(job_id, store.load_checkpoint(job_id))
    drop_rows(first.run_dir, [good, bad])
    ckpt = CheckpointDir(first.run_dir).path(bad)
    blob = bytearray(ckpt.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(blob))
    assert (
        main(["run", "--resume", str(first.run_dir), "--serial", "--threads", "1", "--no-progress"])
        == 0
    )
    after = pd.read_parquet(first.run_dir / "jobs").set_index("job_id")
    assert after.loc[good, "resumed_from_epoch"] == 2
    assert after.loc[bad, "resumed_from_epoch"] == 0 and after.loc[bad, "status"] == "ok"
    assert not list((first.run_dir / "checkpoints").glob("*.ckpt"))


@pytest.fixture
def tiny_disk(tmp_path):
    """A 32 KiB tmpfs (root only): the output disk that fills up mid-run."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize(
    "how",
    [
        ["--serial"],
        ["--executor", "local"],
        pytest.param(["--executor", "ray"], marks=pytest.mark.ray),
    ],
)
def test_a_full_output_disk_fails_clearly_and_keeps_written_rows(tiny_disk, tmp_path, capsys, how):
    spec = make_spec(
        tmp_path,
        models=["mlp", "lenet"],
        folds=4,
        schedulers=["cosine", "warm"],
        training={"epochs": 2, "checkpoint_seconds": 0},
    )
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec.to_dict()))
    code = main(["run", str(spec_path), *how, "--no-progress", "--output", str(tiny_disk)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot write" in err
    assert "--resume" in err
    (run_dir,) = list(tiny_disk.iterdir())
    written = read_table(run_dir, "jobs")  # every row that landed reads whole
    assert 0 < len(written) < 16 and (written["status"] == "ok").all()
    assert not list((run_dir / "jobs").glob(".*.tmp"))


def test_an_output_path_that_cannot_be_a_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="--output"):
        run(
            make_spec(tmp_path),
            executor=SerialExecutor(threads=1),
            output=str(blocker / "r"),
            progress=False,
        )
