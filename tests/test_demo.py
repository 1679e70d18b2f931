"""End to end through the CLI: the README's demo spec, report, and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from raynn.cli import main
from tests.conftest import REPO, make_spec
from tests.tables import drop_rows


def _readme_demo_args() -> list[str]:
    """The arguments of the README's first command (``raynn run ...``), as written there."""
    first = next(
        line for line in (REPO / "README.md").read_text().splitlines() if "raynn run" in line
    )
    run = first.split("&&", 1)[1].split("#", 1)[0].split()
    assert run[:2] == ["raynn", "run"], first
    return run[1:]


@pytest.mark.slow
def test_readme_demo_spec_completes(tmp_path):
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = _readme_demo_args()
    assert "jobs/kfold_digits.yaml" in args
    proc = subprocess.run(
        [sys.executable, "-m", "raynn", *args, "--output", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list(out.iterdir())
    jobs = pd.read_parquet(run_dir / "jobs")
    assert len(jobs) == 30 and (jobs["status"] == "ok").all() and jobs["job_id"].is_unique
    assert jobs.loc[jobs["model"] == "lenet", "val_accuracy"].mean() >= 0.95
    for table in ("epochs", "utilization"):
        assert not pd.read_parquet(run_dir / table).empty
    assert "| lenet | cosine | 5 |" in proc.stdout and str(run_dir) in proc.stdout
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["runs"][-1]["status"] == "completed" and meta["runs"][-1]["executor"] == "ray"


def test_resume_runs_only_the_missing_jobs(tmp_path, capsys):
    spec = make_spec(tmp_path, schedulers=["cosine", "warm"])
    from raynn.kfold.runner import run

    first = run(spec, executor="serial", progress=False)
    before = pd.read_parquet(first.run_dir / "jobs").set_index("job_id")
    lost = sorted(before.index)[:3]
    drop_rows(first.run_dir, lost)  # as if the driver had died before these finished
    code = main(["run", "--resume", str(first.run_dir), "--serial", "--no-progress"])
    assert code == 0
    after = pd.read_parquet(first.run_dir / "jobs").set_index("job_id")
    assert len(after) == 8 and after.index.is_unique and (after["status"] == "ok").all()
    kept = [j for j in before.index if j not in lost]
    assert (after.loc[kept, "end_time"] == before.loc[kept, "end_time"]).all()  # not rerun
    assert (after.loc[lost, "end_time"] > before["end_time"].max()).all()
    meta = json.loads((first.run_dir / "run.json").read_text())
    assert [r["jobs"] for r in meta["runs"]] == [8, 3]
    assert "raynn run" in capsys.readouterr().out


def test_report_command(tmp_path, capsys):
    from raynn.kfold.runner import run

    result = run(make_spec(tmp_path, models=["mlp"]), executor="serial", progress=False)
    assert main(["report", str(result.run_dir), "--no-html"]) == 0
    out = capsys.readouterr().out
    assert "| mlp | cosine | 2 |" in out and "mean CPU utilisation" in out
    assert main(["report", str(tmp_path)]) == 2
    assert "not a raynn run directory" in capsys.readouterr().err
