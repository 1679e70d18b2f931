"""``raynn bench kfold``: every mode runs the same jobs as a command; the summary compares them."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from raynn.cli import main
from tests.conftest import TINY

pytestmark = pytest.mark.ray

EVERY_MODE = "serial,serial1,raynn,raynn_cold,pool,tune,tune_fresh,multi_instance,processes"


def _spec_file(tmp_path, **scheduling):
    raw = {**TINY, "training": {"epochs": 2, "batch_size": 32}}
    raw["scheduling"] = {"sample_interval": 0.2, "cores_per_job": 1, **scheduling}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_every_mode_runs_the_same_jobs_and_the_summary_compares_them(tmp_path, capsys):
    spec = _spec_file(tmp_path)
    out_root = tmp_path / "bench"
    argv = ["bench", "kfold", "--spec", str(spec), "--output", str(out_root), "--no-progress"]
    assert main([*argv, "--modes", EVERY_MODE, "--timeout", "300"]) == 0
    printed = capsys.readouterr().out
    (out,) = out_root.iterdir()
    table = pd.read_parquet(out / "summary.parquet").set_index("mode")
    assert set(table.index) == set(EVERY_MODE.split(","))
    assert table["finished"].all() and (table["ok"] == 4).all()
    # every mode's numbers equal a serial run's at the same thread counts, bit for bit
    assert (table["equal"] == 4).all() and (table["checked"] == 4).all(), table["equal"].to_dict()
    assert (table["wall_s"] > table["makespan_s"]).all() and (table["makespan_s"] > 0).all()
    for col in ("startup_s", "shutdown_s"):
        assert (table[col] > 0).all(), col
    assert (table["overhead_s"] - table["startup_s"] - table["shutdown_s"]).abs().max() < 1e-9
    assert table.loc["serial", "speedup_vs_serial"] == 1.0
    peers = min(table.loc[p, "wall_s"] for p in ("pool", "tune", "multi_instance"))
    assert table.loc["raynn", "vs_best_peer"] == pytest.approx(table.loc["raynn", "wall_s"] / peers)
    assert table.loc["raynn", "efficiency"] > 0  # how high depends on the machine's load
    assert not math.isnan(table.loc["raynn", "cpu_mean"])
    md = (out / "summary.md").read_text()
    assert "| raynn |" in md and "| processes |" in md and "wall_s" in printed
    assert "Where raynn's fixed overhead goes" in md
    bench = json.loads((out / "bench.json").read_text())
    assert bench["probe_s"] > 0 and "--serial" in bench["commands"]["serial"]
    for mode in ("serial", "raynn", "pool", "tune"):
        assert (out / f"utilization_{mode}.png").stat().st_size > 0

    # the warm cache saves the probe: the cold run measures every model, the warm one none
    # (what each run did, from its run.json: not which one happened to take longer)
    def probe(mode: str) -> dict:
        (meta,) = (out / "modes" / f"{mode}-r0").glob("*/run.json")
        return json.loads(meta.read_text())["runs"][-1]["probe"]

    warm, cold = probe("raynn"), probe("raynn_cold")
    models = {"lenet", "mlp"}
    assert (set(warm["cached"]), warm["measured"]) == (models, [])
    assert (cold["cached"], set(cold["measured"])) == ([], models)


@pytest.mark.timeout(60)
def test_the_gap_between_jobs_is_measured_per_worker():
    from raynn.bench.kfold_summary import job_gaps_ms

    jobs = pd.DataFrame(
        {
            "worker": ["a", "b", "a", "a", "b"],
            "start_time": [0.0, 0.5, 1.002, 2.0, 3.0],
            "end_time": [1.0, 2.9, 1.5, 2.5, 4.0],
        }
    )
    # a: 1.0 -> 1.002 (2 ms), 1.5 -> 2.0 (500 ms); b: 2.9 -> 3.0 (100 ms); none across workers
    assert sorted(job_gaps_ms(jobs).round(6)) == [2.0, 100.0, 500.0]
    assert job_gaps_ms(jobs.iloc[:1]).empty and job_gaps_ms(jobs.drop(columns="worker")).empty


def test_widened_jobs_are_replayed_at_their_thread_counts(tmp_path):
    # three jobs on two cores: the last one widens once the other worker retires (each step
    # sleeps, so the jobs take equal wall time under load: see test_executors' widening test)
    spec = _spec_file(tmp_path, probe=False, tail_widening=True)
    raw = yaml.safe_load(spec.read_text())
    sleepy = {"name": "tests.helpers:sleepy_mlp", "label": "sleepy", "args": {"seconds": 0.015}}
    raw.update(folds=3, models=[sleepy], training={"epochs": 6})
    raw["dataset"] = {"name": "synthetic", "shape": [1, 24, 24], "samples": 900}
    spec.write_text(yaml.safe_dump(raw))
    out_root = tmp_path / "bench"
    argv = ["bench", "kfold", "--spec", str(spec), "--output", str(out_root), "--no-progress"]
    assert main([*argv, "--modes", "serial1,raynn", "--repeats", "2"]) == 0
    (out,) = out_root.iterdir()
    runs = pd.read_parquet(out / "runs.parquet")
    assert list(runs["mode"]) == ["serial1", "raynn", "serial1", "raynn"]
    raynn = runs[runs["mode"] == "raynn"]
    assert (raynn["widened"] >= 1).all() and (raynn["replayed"] == raynn["widened"]).all()
    assert (raynn["equal"] == 3).all()
    table = pd.read_parquet(out / "summary.parquet").set_index("mode")
    assert table.loc["raynn", "repeats"] == 2
    assert table.loc["raynn", "wall_min"] <= table.loc["raynn", "wall_s"]
    assert table.loc["raynn", "wall_s"] <= table.loc["raynn", "wall_max"]


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
