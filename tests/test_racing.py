"""Fold racing (``scheduling.racing``): the paired test, the queue's cancellations, whole runs."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
from scipy import stats

from raynn.api import run
from raynn.errors import SpecError
from raynn.kfold.grid import Job
from raynn.kfold.messages import Continue, Retire, Stop
from raynn.kfold.queue import JobQueue
from raynn.kfold.racing import Race, start_race, worse_p_value
from raynn.kfold.rows import RACED_OUT
from raynn.runs.results import read_table
from raynn.spec import Component, TrainingSpec
from raynn.spec.sections import RacingSpec
from tests.conftest import make_spec
from tests.tables import drop_rows

ON = RacingSpec(metric="val_accuracy", alpha=0.05, min_folds=2)

# made-up fold scores: B is clearly worse than A, C as good as A, D worse but noisy
SCORES = {
    "m/A": [0.91, 0.93, 0.92, 0.94, 0.90],
    "m/B": [0.10, 0.11, 0.11, 0.09, 0.10],
    "m/C": [0.90, 0.93, 0.93, 0.93, 0.91],
    "m/D": [0.60, 0.95, 0.40, 0.97, 0.85],
}


def _pooled_p(best: list[float], other: list[float], pool: list[list[float]]) -> tuple:
    """The documented test, written out with numpy: the differences' spread pooled over
    ``pool`` (each configuration's differences from the best, around their own mean), the
    larger of it and their own, on the pooled degrees of freedom (scipy's plain paired test
    where the pool has fewer than 2)."""
    d = np.subtract(best, other)
    df = sum(len(x) - 1 for x in pool if len(x) >= 2)
    if df < 2:
        return stats.ttest_rel(best, other, alternative="greater").pvalue, len(d) - 1
    squares = sum(float(((np.array(x) - np.mean(x)) ** 2).sum()) for x in pool if len(x) >= 2)
    own = float(np.std(d, ddof=1)) if len(d) >= 2 else 0.0
    sd = max(np.sqrt(squares / df), own)
    return stats.t.sf(d.mean() / (sd / np.sqrt(len(d))), df), df


def _expected_out(scores: dict, folds: int, k: int = len(SCORES)) -> set:
    """What the test rejects with every config's first ``folds`` folds finished, at
    alpha / (k - 1)."""
    best = max(sorted(scores), key=lambda c: sum(scores[c][:folds]) / folds)
    pool = [np.subtract(scores[best][:folds], scores[c][:folds]) for c in scores if c != best]
    return {
        c
        for c in scores
        if c != best
        and _pooled_p(scores[best][:folds], scores[c][:folds], pool)[0] < ON.alpha / (k - 1)
    }


def test_the_race_rejects_exactly_the_configurations_the_pooled_paired_test_rejects():
    race = Race(ON)
    race.add(SCORES)  # the grid: four configurations, so each test is at 0.05 / 3
    decided = []
    for fold in range(2):  # every config finishes fold 0, then fold 1 (B last)
        for config in ("m/A", "m/C", "m/D", "m/B"):
            decided += race.record(config, fold, SCORES[config][fold])
    assert {d.config for d in decided} == _expected_out(SCORES, 2) == {"m/B"}
    (d,) = decided
    assert (d.beaten_by, d.folds, race.best()) == ("m/A", (0, 1), "m/A")
    pool = [np.subtract(SCORES["m/A"][:2], SCORES[c][:2]) for c in ("m/B", "m/C", "m/D")]
    p, df = _pooled_p(SCORES["m/A"][:2], SCORES["m/B"][:2], pool)
    assert (d.p_value, d.df) == (pytest.approx(p), df) and df == 3  # 1 df of each of three
    assert d.alpha == pytest.approx(0.05 / 3)
    assert d.reason() == (
        "raced out: val_accuracy worse than m/A on folds 0,1 "
        f"(paired t-test, 3 df: p={d.p_value:.3g} < {0.05 / 3:.3g})"
    )
    for config in sorted(SCORES):  # fold 2: B stays out; D is worse, but not significantly
        if race.reason(config) is None:
            decided += race.record(config, 2, SCORES[config][2])
    left = {c: s for c, s in SCORES.items() if c != "m/B"}
    assert set(race.out) == {"m/B"} | _expected_out(left, 3)
    assert "m/C" not in race.out and "m/D" not in race.out
    # a loss is raced the other way round: lower is better
    loss = Race(RacingSpec(metric="val_loss", min_folds=2))
    for fold, config in itertools.product(range(2), ["m/high", "m/low"]):
        loss.record(
            config, fold, {"low": 0.1, "high": 2.0}[config[2:]] + fold * (config[2:] == "low") / 50
        )
    assert set(loss.out) == {"m/high"} and loss.best() == "m/low"


def test_holm_steps_down_after_each_configuration_out():
    """k = 4: the first configuration out is tested at 0.05 / 3, the next at 0.05 / 2
    (Holm), so C, between the two, is out after B; Bonferroni alone would keep it."""
    scores = {"m/A": [0.95, 0.93], "m/B": [0.86, 0.81], "m/C": [0.90, 0.852], "m/D": [0.93, 0.92]}
    a = scores["m/A"]
    # B's second fold is tested with B and D in the pool (C has one fold), then C's with C
    # and D (B is out)
    p_b = _pooled_p(a, scores["m/B"], [np.subtract(a, scores[c]) for c in ("m/B", "m/D")])[0]
    p_c = _pooled_p(a, scores["m/C"], [np.subtract(a, scores[c]) for c in ("m/C", "m/D")])[0]
    assert p_b < 0.05 / 3 < p_c < 0.05 / 2  # the premise
    race = Race(ON)
    race.add(scores)
    decided = []
    for fold in range(2):
        for config in ("m/A", "m/D", "m/B", "m/C"):
            decided += race.record(config, fold, scores[config][fold])
    assert [(d.config, d.alpha) for d in decided] == [
        ("m/B", pytest.approx(0.05 / 3)),
        ("m/C", pytest.approx(0.05 / 2)),
    ]
    assert [d.p_value for d in decided] == [pytest.approx(p_b), pytest.approx(p_c)]


def test_one_fold_is_tested_against_the_pooled_spread_of_the_others():
    """With min_folds 1, a configuration far behind on its first fold is out at once, once
    two others give the race a spread; one as far behind with no pool is not."""
    race = Race(RacingSpec(min_folds=1))
    race.add(["m/A", "m/B", "m/C", "m/D"])
    for fold in range(2):
        for config, value in (("m/A", 0.95 - fold / 100), ("m/B", 0.94), ("m/C", 0.93)):
            assert race.record(config, fold, value) == []
    (d,) = race.record("m/D", 0, 0.2)
    pool = [[0.01, 0.0], [0.02, 0.01]]
    p, df = _pooled_p([0.95], [0.2], pool)
    assert (d.config, d.folds, d.df, d.p_value) == ("m/D", (0,), 2, pytest.approx(p))
    lone = Race(RacingSpec(min_folds=1))
    lone.record("m/A", 0, 0.95)
    assert lone.record("m/B", 0, 0.2) == []  # nothing to scale one difference by


def test_worse_p_value_is_scipys_one_sided_test_with_its_edge_cases():
    best, other = [0.9, 0.95, 0.92], [0.5, 0.7, 0.6]
    assert worse_p_value(best, other) == (
        pytest.approx(stats.ttest_rel(best, other, alternative="greater").pvalue),
        2,
    )
    assert worse_p_value([0.8, 0.7], [0.9, 0.85])[0] > 0.5  # better, not worse
    assert worse_p_value([0.9, 0.9], [0.9, 0.9])[0] == 1.0  # no difference
    # the same lead on every fold: t is infinite, the sign test decides (0.5 ** n)
    assert worse_p_value([0.75, 0.5], [0.5, 0.25])[0] == 0.25
    # one validation sample (of 288) ahead on four folds: with the metric's step as the
    # least spread that is no evidence; 0.87 ahead on two folds still is
    step = 1 / 288
    behind = [0.99 - step, 0.98 - step, 0.97 - step, 0.96 - step]
    assert worse_p_value([0.99, 0.98, 0.97, 0.96], behind, step)[0] > 0.05
    assert worse_p_value([0.97, 0.96], [0.10, 0.09], step)[0] < 0.01
    assert start_race(ON, None, [287, 288]).resolution == pytest.approx(step)
    assert start_race(RacingSpec(metric="val_loss"), None, [288]).resolution == 0.0
    assert worse_p_value([0.9], [0.1]) == (1.0, 0)  # one pair and no pool tells nothing
    # a pooled spread: its degrees of freedom, and the larger of it and the pair's own
    pooled = (0.01, 8)
    t = (0.9 - 0.1) / 0.01
    assert worse_p_value([0.9], [0.1], 0.0, pooled) == (pytest.approx(stats.t.sf(t, 8)), 8)
    wide = worse_p_value([0.9, 0.9], [0.1, 0.7], 0.0, pooled)
    own = np.std([0.8, 0.2], ddof=1)
    assert wide == (pytest.approx(stats.t.sf(0.5 / (own / np.sqrt(2)), 8)), 8)
    race = Race(ON)
    assert race.record("m/A", 0, float("nan")) == [] and race.scores == {}


def _grid_jobs(configs: list[str], folds: int) -> list[Job]:
    return [
        Job(f"{c}-{f}", i, Component("mlp"), Component(c), f, f, training=TrainingSpec(epochs=5))
        for i, (c, f) in enumerate(itertools.product(configs, range(folds)))
    ]


def _queue(workers: int) -> JobQueue:
    q = JobQueue(_grid_jobs(["cosine", "warm"], 4), race=Race(ON))
    for w in range(workers):
        q.register(f"w{w}", "n", (w,))
    return q


def test_with_racing_a_lease_grants_one_job_after_short_ones_too():
    # the race sees each result before the next lease (no prefetch batches)
    q = _queue(1)
    assert q.lease("w0", want=16).job.job_id == "cosine-0"  # a Grant, not a Batch
    assert JobQueue(_grid_jobs(["cosine", "warm"], 4)).lease("w0", want=16).grants


def test_with_racing_the_queue_hands_out_folds_staggered():
    jobs = _grid_jobs(["cosine", "warm", "step", "none", "reduce"], 3)  # config by config
    assert [j.job_id for j in JobQueue(jobs)._pending][:3] == ["cosine-0", "cosine-1", "cosine-2"]
    q = JobQueue(jobs, race=Race(ON))
    # configuration i's fold r at position i + 2r (ties: the earlier fold first)
    assert [j.job_id for j in q._pending] == [
        "cosine-0", "warm-0", "step-0", "cosine-1", "none-0", "warm-1", "reduce-0",
        "step-1", "cosine-2", "none-1", "warm-2", "reduce-1", "step-2", "none-2", "reduce-2",
    ]  # fmt: skip


def test_the_queue_cancels_the_pending_folds_of_a_raced_configuration():
    q = _queue(2)
    for f, good, bad in [(0, 0.90, 0.10), (1, 0.92, 0.13)]:
        assert q.lease("w0").job.job_id == f"cosine-{f}"
        assert q.lease("w1").job.job_id == f"warm-{f}"
        assert q.complete(f"cosine-{f}", metrics={"val_accuracy": good}) == []
        cancelled = q.complete(f"warm-{f}", metrics={"val_accuracy": bad})
    # out after its second fold: its pending folds come back once, for their rows
    assert sorted(j.job_id for j, _ in cancelled) == ["warm-2", "warm-3"]
    assert all("worse than mlp/cosine on folds 0,1" in reason for _, reason in cancelled)
    assert [q.lease(w).job.job_id for w in ("w0", "w1")] == ["cosine-2", "cosine-3"]
    assert q.progress("cosine-2", 1) == Continue()  # the other configuration runs on
    for f in (2, 3):
        assert q.complete(f"cosine-{f}", metrics={"val_accuracy": 0.9}) == []
    assert q.lease("w0") == Retire()  # nothing of warm is handed out any more
    stats = q.stats()
    assert (stats.done, stats.pending, stats.running, stats.finished) == (8, 0, 0, True)


def _warm_running_when_raced(q: JobQueue) -> str:
    """Three workers: cosine has two folds, warm-2 runs when warm-1 races warm out."""
    assert [q.lease(w).job.job_id for w in ("w0", "w1", "w2")] == ["cosine-0", "warm-0", "cosine-1"]
    q.complete("cosine-0", metrics={"val_accuracy": 0.90})
    q.complete("cosine-1", metrics={"val_accuracy": 0.92})
    assert [q.lease(w).job.job_id for w in ("w0", "w2")] == ["warm-1", "cosine-2"]
    assert q.complete("warm-0", metrics={"val_accuracy": 0.10}) == []  # one fold: no decision
    assert q.lease("w1").job.job_id == "warm-2"
    assert q.progress("warm-2", 1) == Continue()  # not decided yet
    cancelled = q.complete("warm-1", metrics={"val_accuracy": 0.15})
    assert [j.job_id for j, _ in cancelled] == ["warm-3"]  # the pending one
    return cancelled[0][1]


def test_a_running_fold_of_a_raced_configuration_stops_at_its_next_epoch():
    q = _queue(3)
    reason = _warm_running_when_raced(q)
    assert reason.startswith("raced out: val_accuracy worse than mlp/cosine on folds 0,1")
    # the running fold gets the reason at its next epoch, but not after its last (a fold
    # that has finished training keeps its result); its worker then reports it raced out
    assert q.progress("warm-2", 2) == Stop(reason) and q.progress("warm-2", 5) == Continue()
    assert q.complete("warm-2", ok=False, error=reason, raced_out=True) == []
    assert q.lease("w0").job.job_id == "cosine-3"
    for f in (2, 3):
        assert q.complete(f"cosine-{f}", metrics={"val_accuracy": 0.9}) == []
    stats = q.stats()
    assert (stats.done, stats.failed, stats.pending, stats.running) == (8, 0, 0, 0)


def test_a_stopped_fold_whose_worker_dies_is_recorded_not_retried():
    q = _queue(3)
    reason = _warm_running_when_raced(q)
    assert q.release_worker("w1") == []  # warm-2's worker died after it was told to stop
    assert q.lease("w0").job.job_id == "cosine-3"  # warm-2 is not handed out again
    recorded = q.complete("cosine-2", metrics={"val_accuracy": 0.91})
    assert [(j.job_id, why) for j, why in recorded] == [("warm-2", reason)]
    q.complete("cosine-3", metrics={"val_accuracy": 0.9})
    stats = q.stats()
    assert (stats.done, stats.failed, stats.pending, stats.running) == (8, 0, 0, 0)


RACE_GRID = {
    "folds": 4,
    "models": ["mlp"],
    "schedulers": ["cosine", {"name": "onecycle", "label": "lr300x", "args": {"max_lr": 0.9}}],
    "training": {"epochs": 2, "batch_size": 32},
    "scheduling": {"probe": False, "cores_per_job": 1},
}


def _run(tmp_path, racing, **kw):
    spec = make_spec(tmp_path, **{**RACE_GRID, "scheduling": {**RACE_GRID["scheduling"],
                                                              "racing": racing}})  # fmt: skip
    return run(spec, executor="serial", threads=1, progress=False, **kw)


def test_a_serial_run_races_out_the_bad_configuration_the_same_way_every_time(tmp_path):
    full = _run(tmp_path / "full", False)
    raced = [_run(tmp_path / f"r{i}", {"min_folds": 2}) for i in range(2)]
    rows = [r.jobs.sort_values("job_id").reset_index(drop=True) for r in raced]
    out = rows[0][rows[0]["status"] == RACED_OUT]
    assert set(out["scheduler"]) == {"lr300x"} and len(out) == 2  # 4 folds, 2 to decide
    assert out["error"].str.contains("raced out: val_accuracy worse than mlp/cosine").all()
    assert rows[0][["job_id", "status", "error"]].equals(rows[1][["job_id", "status", "error"]])

    # the same best configuration, fewer job-seconds
    def best(jobs):
        ok = jobs[jobs["status"] == "ok"]
        return ok.groupby(["model", "scheduler"])["val_accuracy"].mean().idxmax()

    assert best(rows[0]) == best(full.jobs) == ("mlp", "cosine")
    assert (full.jobs["status"] == "ok").all()
    meta = json.loads((raced[0].run_dir / "run.json").read_text())
    (summary,) = meta["runs"][-1]["racing"]
    assert (summary["scheduler"], summary["folds_run"], summary["folds_raced_out"]) == (
        "lr300x",
        2,
        2,
    )
    assert "2 raced out" in (raced[0].run_dir / "report.md").read_text()


def test_raced_out_rows_survive_resume_and_are_not_run_again(tmp_path):
    first = _run(tmp_path, True)
    run_dir = first.run_dir
    before = read_table(run_dir, "jobs").set_index("job_id")
    raced = set(before.index[before["status"] == RACED_OUT])
    assert raced
    # lose one ok fold of the good configuration, as a crash would, then resume
    lost = before.index[(before["status"] == "ok") & (before["scheduler"] == "cosine")][-1]
    drop_rows(run_dir, [lost])
    again = run(None, resume=run_dir, executor="serial", threads=1, progress=False)
    after = again.jobs.set_index("job_id")
    assert after.loc[lost, "status"] == "ok"
    assert set(after.index[after["status"] == RACED_OUT]) == raced
    for job_id in raced:  # untouched: the same row, not run again
        assert after.loc[job_id, "end_time"] == before.loc[job_id, "end_time"]
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["runs"][-1]["jobs"] == 1  # only the lost fold ran


def test_racing_spec_errors_name_the_key_and_the_fix(tmp_path):
    for racing, words in [
        ({"metric": "f1"}, "scheduling.racing.metric': unknown metric 'f1'; valid: val_accuracy"),
        ({"alpha": 1.5}, "scheduling.racing.alpha': must be a number between 0 and 1"),
        ({"min_folds": 0}, "scheduling.racing.min_folds': must be a positive integer"),
        ({"min_fold": 2}, "scheduling.racing.min_fold': unknown key; valid keys: metric"),
        ("on", "scheduling.racing': must be false, true or a mapping"),
        ({"min_folds": 5}, "scheduling.racing.min_folds': 5 is more than folds (4)"),
    ]:
        with pytest.raises(SpecError, match=words.replace("(", r"\(").replace(")", r"\)")):
            _run(tmp_path, racing)
    shutil.rmtree(tmp_path, ignore_errors=True)
