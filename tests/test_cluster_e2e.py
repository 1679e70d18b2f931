"""End to end on a real local cluster: cluster/local.sh up, ray job submit, raynn submit, down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]
BIN = Path(sys.executable).parent


def _live_members(pgid: int) -> list[str]:
    out = subprocess.run(
        ["ps", "-o", "stat=,cmd=", "--sid", str(pgid)], capture_output=True, text=True
    ).stdout
    return [line for line in out.splitlines() if line.strip() and not line.startswith("Z")]


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("cluster")
    env = {
        **os.environ,
        "RAYNN_CLUSTER_DIR": str(state),
        "RAYNN_HEAD_PORT": "6391",
        "RAYNN_DASHBOARD_PORT": "8266",
        "RAYNN_PORT_BASE": "33000",
        "RAY": str(BIN / "ray"),
        "PYTHON": sys.executable,
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    env.pop("RAY_ADDRESS", None)
    script = str(REPO / "cluster" / "local.sh")
    up = subprocess.run(
        [script, "up", "--workers", "1"], env=env, capture_output=True, text=True, timeout=300
    )
    assert up.returncode == 0, up.stdout + up.stderr
    pids = [int(p.read_text()) for p in state.glob("*.pid")]
    for line in subprocess.run(
        [script, "env"], env=env, capture_output=True, text=True
    ).stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    yield env
    down = subprocess.run([script, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert all(not _live_members(p) for p in pids), [_live_members(p) for p in pids]
    assert not list(state.glob("*.pid"))


def test_ray_job_submit_runs_the_demo_on_both_nodes(local_cluster, tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.run(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--working-dir",
            str(REPO),
            "--",
            "raynn",
            "run",
            "jobs/kfold_digits.yaml",
            "--no-progress",
            "--output",
            str(out),
        ],
        env=local_cluster,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = list(out.iterdir())
    jobs = pd.read_parquet(run_dir / "jobs")
    assert len(jobs) == 30 and jobs["job_id"].is_unique and (jobs["status"] == "ok").all()
    assert jobs["node"].nunique() == 2
    assert not pd.read_parquet(run_dir / "epochs").empty


def test_raynn_submit_waits_and_streams_logs(local_cluster, tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "raynn",
            "submit",
            "tests/data/tiny_kfold.yaml",
            "--wait",
            "--address",
            local_cluster["RAY_ADDRESS"],
            "--output",
            str(out),
        ],
        env={**local_cluster, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "submitted raysubmit_" in proc.stdout and "jobs: 4 ok" in proc.stdout
    assert "SUCCEEDED" in proc.stdout
    (run_dir,) = list(out.iterdir())
    assert len(pd.read_parquet(run_dir / "jobs")) == 4


def test_raynn_submit_refuses_a_malformed_spec_before_sending(local_cluster, tmp_path):
    bad = REPO / "tests" / "data" / "bad_model.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "raynn", "submit", str(bad)],
        cwd=REPO,
        env={**local_cluster, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "resnet0" in proc.stderr and "Traceback" not in proc.stderr
