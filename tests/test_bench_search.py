"""``raynn bench search``: every mode searches the same space as a command; each choice is
scored against the full run (rank, regret, the best's standard error)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from raynn.bench.search import rotated, spec_files
from raynn.bench.search_peers import best_complete
from raynn.bench.search_summary import (
    SUMMARY_COLUMNS,
    dropped,
    folds_from_jobs,
    score,
    summarize,
    truth,
)
from raynn.cli import main

TINY_SEARCH = {
    "kind": "kfold",
    "name": "tiny_search",
    "seed": 0,
    "folds": 3,
    "search": {"samples": 4, "seed": 1},
    "dataset": {"name": "digits", "limit": 300},
    "models": ["mlp"],
    "schedulers": ["cosine"],
    "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-4, 3.0]}},
    "training": {"epochs": 2, "batch_size": 32},
    "scheduling": {"cores_per_job": 1, "tail_widening": False, "sample_interval": 0.2},
}


def _folds(values: dict[str, list[float | None]]) -> pd.DataFrame:
    """Fold rows by hand: None is a failed (diverged) fold."""
    rows = []
    for config, accs in values.items():
        for fold, acc in enumerate(accs):
            status = "failed" if acc is None else "ok"
            acc = math.nan if acc is None else acc
            rows.append({"config": config, "fold": fold, "val_accuracy": acc, "status": status})
    return pd.DataFrame(rows).assign(trained=True, start_time=0.0, end_time=1.0)


HAND = {"a": [0.90, 0.80, 0.85], "b": [0.95, 0.90, 0.92], "c": [0.50, 0.60, None]}


@pytest.mark.timeout(30)
def test_truth_ranks_configurations_and_gives_the_standard_error():
    ref = truth(_folds(HAND), 3)
    assert ref.loc["b", "rank"] == 1 and ref.loc["a", "rank"] == 2
    assert math.isnan(ref.loc["c", "mean"]) and ref.loc["c", "rank"] == 3  # diverged: last
    b = np.array(HAND["b"])
    assert ref.loc["b", "mean"] == pytest.approx(b.mean())
    assert ref.loc["b", "se"] == pytest.approx(b.std(ddof=1) / math.sqrt(3))


@pytest.mark.timeout(30)
def test_score_gives_rank_regret_and_whether_it_is_within_the_se():
    ref = truth(_folds(HAND), 3)
    best_mean, se = np.mean(HAND["b"]), np.std(HAND["b"], ddof=1) / math.sqrt(3)
    got = score("a", ref)
    assert got["best"] == "b" and got["rank"] == 2
    assert got["regret"] == pytest.approx(best_mean - np.mean(HAND["a"]))
    assert got["best_se"] == pytest.approx(se) and got["within_se"] is False
    same = score("b", ref)
    assert same["regret"] == 0 and same["rank"] == 1 and same["within_se"] is True
    diverged = score("c", ref)
    assert diverged["rank"] == 3 and math.isnan(diverged["regret"]) and not diverged["within_se"]
    nothing = score(None, ref)
    assert math.isnan(nothing["rank"]) and nothing["best"] == "b" and not nothing["within_se"]


@pytest.mark.timeout(30)
def test_tune_chooses_only_among_configurations_with_every_fold():
    rows = _folds({"a": [0.90, 0.80, 0.85], "b": [0.99]}).to_dict("records")  # b: ASHA stopped
    assert best_complete(rows, 3) == "a"
    assert best_complete([], 3) is None


@pytest.mark.timeout(30)
def test_a_cancelled_fold_is_not_trained_a_stopped_one_is():
    jobs = pd.DataFrame(
        {
            "config": ["a", "a", "a"],
            "model": ["mlp"] * 3,
            "scheduler": ["cosine"] * 3,
            "fold": [0, 1, 2],
            "val_accuracy": [0.5, math.nan, math.nan],
            "status": ["ok", "raced_out", "raced_out"],
            "attempt": [1, 1, 0],  # fold 1 stopped at an epoch end, fold 2 never started
            "start_time": [0.0, 0.0, 2.0],
            "end_time": [1.0, 1.5, 2.0],
        }
    )
    assert folds_from_jobs(jobs)["trained"].tolist() == [True, True, False]
    # without a config column (an older run), the configuration is model/scheduler
    assert set(folds_from_jobs(jobs.drop(columns="config"))["config"]) == {"mlp/cosine"}


@pytest.mark.timeout(30)
def test_summary_takes_medians_the_worst_choice_and_the_fastest_peer():
    row = {"finished": True, "folds_total": 10, "first_fold_s": 1.0, "last_fold_s": 2.0}
    row.update(best_se=0.01, chosen_mean=0.9)
    rows = pd.DataFrame(
        [
            {**row, "mode": "raynn", "wall_s": 4.0, "folds_trained": 6, "chosen": "a"},
            {**row, "mode": "raynn", "wall_s": 6.0, "folds_trained": 8, "chosen": "a"},
            {**row, "mode": "optuna", "wall_s": 10.0, "folds_trained": 10, "chosen": "b"},
            {**row, "mode": "tune", "wall_s": 8.0, "folds_trained": 7, "chosen": "b"},
        ]
    ).assign(
        rank=[1, 3, 1, 2], regret=[0.0, 0.02, 0.0, 0.005], within_se=[True, False] + [True] * 2,
        dropped=[1, 2, 0, 1], near_best_dropped=[0, 1, 0, 0],
    )  # fmt: skip
    table = summarize(rows).set_index("mode")
    assert table.loc["raynn", "wall_s"] == 5.0 and table.loc["raynn", "wall_max"] == 6.0
    assert table.loc["raynn", "vs_fastest_peer"] == pytest.approx(5.0 / 8.0)
    assert table.loc["raynn", "rank"] == 3 and table.loc["raynn", "regret"] == 0.02
    assert not table.loc["raynn", "within_se"] and table.loc["tune", "within_se"]
    assert (table.loc["raynn", "dropped"], table.loc["raynn", "near_best_dropped"]) == (1.5, 1)


@pytest.mark.timeout(30)
def test_dropping_a_configuration_near_the_best_is_counted():
    near = {**HAND, "d": [0.94, 0.91, 0.91]}  # mean 0.92 against b's 0.923, SE 0.015
    ref = truth(_folds(near), 3)
    run = _folds({"b": HAND["b"], "a": HAND["a"][:1], "d": near["d"][:2]})
    assert dropped(run, 3, ref) == (3, 1)  # a, c and d lost; d is within b's SE
    assert dropped(_folds(near), 3, ref) == (1, 0)  # c (diverged) never counts as near


@pytest.mark.timeout(30)
def test_modes_rotate_and_the_spec_copies_turn_racing_off_and_on(tmp_path):
    assert rotated(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert rotated(["a", "b", "c"], 4) == ["b", "c", "a"]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(TINY_SEARCH))
    files = spec_files(path, tmp_path)
    assert yaml.safe_load(files["full"].read_text())["scheduling"]["racing"] is False
    racing = yaml.safe_load(files["racing"].read_text())["scheduling"]["racing"]
    assert racing == {"metric": "val_accuracy"}
    own = {**TINY_SEARCH, "scheduling": {"racing": {"metric": "val_loss", "min_folds": 3}}}
    path.write_text(yaml.safe_dump(own))
    racing = yaml.safe_load(spec_files(path, tmp_path)["racing"].read_text())["scheduling"]
    assert racing["racing"] == {"metric": "val_loss", "min_folds": 3}  # the spec's own


def _independent_truth(run_dir) -> tuple[pd.Series, str, float]:
    """Every configuration's mean over its folds from full's jobs table, the best and its SE."""
    from raynn.kfold import tables  # noqa: F401 - registers the tables' schemas
    from raynn.runs.results import read_table

    jobs = read_table(run_dir, "jobs")
    assert (jobs["status"] == "ok").all()
    means = jobs.groupby("config")["val_accuracy"].mean()
    best = str(means.idxmax())
    accs = jobs.loc[jobs["config"] == best, "val_accuracy"].to_numpy()
    return means, best, float(accs.std(ddof=1) / math.sqrt(len(accs)))


@pytest.mark.timeout(900)
def test_every_mode_searches_the_same_space_and_is_scored_against_full(tmp_path, capsys):
    spec = tmp_path / "tiny_search.yaml"
    spec.write_text(yaml.safe_dump(TINY_SEARCH))
    out_root = tmp_path / "bench"
    argv = ["bench", "search", "--spec", str(spec), "--output", str(out_root), "--no-progress"]
    assert main([*argv, "--modes", "full,raynn,optuna", "--timeout", "300"]) == 0
    printed = capsys.readouterr().out
    (out,) = out_root.iterdir()
    assert out.name.startswith("search-")
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["mode"]) == ["full", "raynn", "optuna"] and runs["finished"].all()
    assert (runs["folds_total"] == 12).all()
    assert runs.set_index("mode").loc["full", "folds_trained"] == 12
    (full_dir,) = [p for p in (out / "modes" / "full-r0").iterdir() if p.is_dir()]
    means, best, se = _independent_truth(full_dir)
    assert len(means) == 4
    ranks = means.rank(ascending=False, method="min")
    for _, row in runs.iterrows():
        assert row["best"] == best and row["best_se"] == pytest.approx(se)
        assert row["chosen"] in means.index, row["mode"]
        assert row["rank"] == ranks[row["chosen"]]
        assert row["regret"] == pytest.approx(means[best] - means[row["chosen"]])
        assert row["within_se"] == (row["regret"] <= se)
    assert means[runs.set_index("mode").loc["full", "chosen"]] == means.max()  # a tie: either
    md = (out / "summary.md").read_text()
    header = "| " + " | ".join(SUMMARY_COLUMNS) + " |"
    assert header in md and header in printed and "raynn bench search --spec" in md
    assert "| optuna |" in md and "Where raynn's time goes" in md
    assert (out / "metric_vs_lr.png").stat().st_size > 0


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_the_tune_peer_stops_trials_by_fold_and_chooses_among_complete_ones(tmp_path):
    import json
    import subprocess
    import sys

    spec = tmp_path / "tiny_search.yaml"
    spec.write_text(yaml.safe_dump(TINY_SEARCH))
    out = tmp_path / "tune"
    cmd = [sys.executable, "-m", "raynn.bench.search_peers", "tune", "--spec", str(spec)]
    done = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pd.DataFrame(json.loads((out / "rows.json").read_text()))
    assert len(rows) == 12 and set(rows["status"]) <= {"ok", "pruned"}
    assert not rows.duplicated(["config", "fold"]).any()  # every fold once, trained or not
    ok = rows[rows["status"] == "ok"]
    assert set(ok.loc[ok["fold"] == 0, "config"]) == set(rows["config"])  # grace period: 1 fold
    complete = ok.groupby("config")["val_accuracy"].agg(["mean", "count"])
    complete = complete[complete["count"] == 3]
    chosen = json.loads((out / "result.json").read_text())["chosen"]
    assert chosen == complete["mean"].idxmax()
