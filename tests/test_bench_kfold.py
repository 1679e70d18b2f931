"""``raynn bench kfold``: every mode runs the same jobs; the summary says how they compare."""

from __future__ import annotations

import math
import signal

import pandas as pd
import pytest
import yaml

from raynn.cli import main
from tests.conftest import TINY

pytestmark = pytest.mark.ray


def _spec_file(tmp_path):
    raw = {**TINY, "training": {"epochs": 2, "batch_size": 32}}
    raw["scheduling"] = {"sample_interval": 0.2, "probe": False, "cores_per_job": 1}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_every_mode_runs_the_same_jobs_and_the_summary_compares_them(tmp_path, capsys):
    import ray

    if ray.is_initialized():  # the raynn and tune modes start their own local Ray
        ray.shutdown()
    sigint = signal.getsignal(signal.SIGINT)
    spec = _spec_file(tmp_path)
    out_root = tmp_path / "bench"
    argv = ["bench", "kfold", "--spec", str(spec), "--output", str(out_root), "--no-progress"]
    assert main([*argv, "--modes", "serial,serial1,raynn,tune,processes", "--timeout", "300"]) == 0
    printed = capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is sigint  # Ctrl-C still interrupts the caller
    (out,) = out_root.iterdir()
    table = pd.read_parquet(out / "summary.parquet").set_index("mode")
    assert list(table.index) == ["serial", "serial1", "raynn", "tune", "processes"]
    assert table["finished"].all() and (table["ok"] == 4).all() and (table["jobs"] == 4).all()
    assert (table["makespan_s"] > 0).all() and table.loc["serial", "speedup_vs_serial"] == 1.0
    # one thread per job in raynn, like serial1: the same numbers, bit for bit
    assert table.loc["raynn", "metrics_equal_serial1"] == 4
    eff = table.loc["raynn", "efficiency"]
    assert 0 < eff <= 1.5 and not math.isnan(table.loc["raynn", "cpu_mean"])
    assert table.loc["raynn", "startup_s"] > 0 and table.loc["raynn", "shutdown_s"] >= 0
    md = (out / "summary.md").read_text()
    assert "| raynn |" in md and "| processes |" in md and "makespan_s" in printed
    for mode in ("serial", "raynn", "tune"):
        assert (out / f"utilization_{mode}.png").stat().st_size > 0
        jobs = pd.read_parquet(out / "modes" / mode / "jobs")
        assert sorted(jobs["job_id"]) == sorted(
            pd.read_parquet(out / "modes" / "serial1" / "jobs")["job_id"]
        )


def test_unknown_mode_and_wrong_kind_exit_2_with_one_line(tmp_path, capsys):
    spec = _spec_file(tmp_path)
    assert main(["bench", "kfold", "--spec", str(spec), "--modes", "raynn,fast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fast" in err[0] and "serial1" in err[0]
    hog = tmp_path / "h.yaml"
    hog.write_text("kind: hogwild\nname: h\n")
    assert main(["bench", "kfold", "--spec", str(hog)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kind: kfold" in err[0]
