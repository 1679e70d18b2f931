"""The report of a searched run, by configuration (issue 20, item 4): the best configurations
with their 95% t-intervals, the fold-racing line, a figure per searched numeric key, the
accuracy figure's top 20, and ``--against`` paired by configuration.

The run directories are written by hand, as a searched run writes them (a ``jobs/`` table with
``config`` and one typed column per searched key, and run.json's ``search`` record), so that
every number is known; one real tiny searched run checks that they are read the same way.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from raynn.cli import main
from raynn.kfold.report import compare, config_table, paired_folds, summarize
from raynn.kfold.report import figures as kfold_figures
from raynn.kfold.tables import JOBS_SCHEMA, search_schema
from raynn.runs import figures as plots
from tests.conftest import make_spec

COLUMNS = [
    {"name": "model.hidden", "type": "json", "kind": "grid", "short": "hidden"},
    {"name": "optimizer.lr", "type": "float64", "kind": "loguniform", "short": "lr"},
    {"name": "training.batch_size", "type": "int64", "kind": "randint", "short": "batch_size"},
]
FOLDS = 4
N_CONFIGS = 12
# configuration index -> its ok folds before fold racing stopped it (the rest raced out)
RACED = {3: 2, 7: 2, 10: 3}
OK_SECONDS, RACED_SECONDS = 2.0, 0.5  # train seconds of an ok fold; of a stopped one


def _values(i: int) -> dict[str, object]:
    return {
        "model.hidden": json.dumps([32 if i % 2 else 64]),
        "optimizer.lr": float(f"{10 ** (-4 + 0.31 * i):.4g}"),
        "training.batch_size": 16 + 8 * i,
    }


def _config(i: int) -> str:
    v = _values(i)
    lr, batch = f"{v['optimizer.lr']:.4g}", v["training.batch_size"]
    return f"mlp/cosine/hidden={v['model.hidden']},lr={lr},batch_size={batch}"


def _accuracy(i: int, fold: int) -> float:
    """Means in a shuffled order (not the configurations' order), spread over the folds."""
    return round(0.4 + 0.04 * ((5 * i) % N_CONFIGS) + 0.013 * ((fold * (i + 1)) % 3), 4)


def _row(i: int, fold: int, status: str, **kw: object) -> dict[str, object]:
    ok = status == "ok"
    row = {f.name: None for f in JOBS_SCHEMA}
    row.update(
        job_id=f"mlp-cosine-{i:08x}-f{fold}", model="mlp", scheduler="cosine", fold=fold,
        seed=fold, config=_config(i), status=status, attempt=1, epochs=2 if ok else 1,
        resumed_from_epoch=0, val_accuracy=_accuracy(i, fold) if ok else math.nan,
        test_accuracy=_accuracy(i, fold) - 0.01 if ok else math.nan, val_loss=1.0,
        test_loss=1.0, train_seconds=OK_SECONDS if ok else RACED_SECONDS, eval_seconds=0.0,
        queue_wait_seconds=0.0, start_time=100.0 + 3 * fold, end_time=102.0 + 3 * fold,
        node="n", worker="0", cores=[0], threads=1, params=1000, affinity=[0],
        thread_pools=[], per_class_accuracy=[], error=None if ok else "raced out: by hand",
        **_values(i),
    )  # fmt: skip
    row.update(kw)
    return row


def _rows() -> list[dict[str, object]]:
    rows = []
    for i in range(N_CONFIGS):
        for fold in range(FOLDS):
            rows.append(_row(i, fold, "ok" if fold < RACED.get(i, FOLDS) else "raced_out"))
    return rows


def _write_run(path, rows) -> object:
    """A run directory as a searched run writes it: run.json (with ``search``) and jobs/."""
    (path / "jobs").mkdir(parents=True)
    configs = sorted({r["config"] for r in rows})
    meta = {
        "spec": {"name": "hand", "kind": "kfold"},
        "runs": [{"executor": "serial", "status": "completed", "wall_seconds": 20.0,
                  "workers": 1, "cores_per_job": 1}],
        "search": {
            "samples": N_CONFIGS, "seed": 0, "max_jobs": 100_000, "columns": COLUMNS,
            "configurations": [{"config": c, "key": "", "model": "mlp", "scheduler": "cosine",
                                "values": {}} for c in configs],
        },
    }  # fmt: skip
    (path / "run.json").write_text(json.dumps(meta))
    schema = search_schema(JOBS_SCHEMA, [(c["name"], c["type"], None) for c in COLUMNS])
    table = pa.Table.from_pandas(pd.DataFrame(rows), schema, preserve_index=False)
    pq.write_table(table, path / "jobs" / "all.parquet")
    return path


@pytest.fixture
def searched(tmp_path):
    return _write_run(tmp_path / "hand", _rows())


def _table(text: str, head: str) -> list[list[str]]:
    """The body rows of the markdown table whose header starts with ``head``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append([c.strip() for c in line.strip().strip("|").split("|")])
    return body


@pytest.mark.timeout(60)
def test_the_table_ranks_the_best_configurations_with_their_t_intervals(searched):
    text = summarize(searched)
    rows = _table(text, "| model | scheduler | hidden | lr | batch_size | ok |")
    expected = []  # (mean, id) per configuration over its ok folds, computed here
    for i in range(N_CONFIGS):
        vals = [_accuracy(i, f) for f in range(RACED.get(i, FOLDS))]
        half = stats.t.ppf(0.975, len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))
        expected.append((-statistics.mean(vals), _config(i), half, i, len(vals)))
    expected.sort()
    assert len(rows) == 10  # the best 10 of 12
    assert "the best 10 of 12" in text and "... and 2 more configurations" in text
    for cells, (neg_mean, _, half, i, n) in zip(rows, expected, strict=False):
        v = _values(i)
        assert cells[:5] == [
            "mlp", "cosine", v["model.hidden"], f"{v['optimizer.lr']:.4g}",
            str(v["training.batch_size"]),
        ]  # fmt: skip
        assert cells[5] == (f"{n} (raced out)" if i in RACED else str(n))
        mean_text, half_text = cells[6].split(" ± ")
        assert float(mean_text) == pytest.approx(-neg_mean, abs=1e-4)
        assert float(half_text) == pytest.approx(half, abs=1e-4)
    table = config_table(pd.read_parquet(searched / "jobs"))
    assert list(table["config"]) == [c for _, c, *_ in expected]
    assert list(table["half"]) == pytest.approx([h for _, _, h, *_ in expected])
    assert plots.t_interval([0.5])[0] == 0.5 and math.isnan(plots.t_interval([0.5])[1])


@pytest.mark.timeout(60)
def test_the_racing_line_counts_configurations_by_the_folds_they_ran(searched):
    text = summarize(searched)
    after = Counter(RACED.values())
    assert sorted(after.items()) == [(2, 2), (3, 1)]
    saved = sum(OK_SECONDS * (FOLDS - n) - RACED_SECONDS * (FOLDS - n) for n in RACED.values())
    folds_out = sum(FOLDS - n for n in RACED.values())
    assert (
        f"Fold racing: 3 of {N_CONFIGS} configurations raced out: 2 after 2 folds, 1 after 3 "
        f"folds; {folds_out} folds raced out, about {saved:.1f} job-seconds saved."
    ) in text
    assert f"- jobs: {sum(RACED.values()) + 9 * FOLDS} ok, 0 failed, {folds_out} raced out" in text
    raced = _table(text, "| configuration | folds run | raced out |")
    assert [r[0] for r in raced] == [_config(10), *sorted([_config(3), _config(7)])]
    assert [r[1:3] for r in raced] == [["3", "1"], ["2", "2"], ["2", "2"]]
    assert raced[0][4] == "by hand"  # the reason, without its "raced out: "


@pytest.mark.timeout(90)
def test_a_figure_per_numeric_searched_key_on_a_log_axis_for_loguniform(searched, capsys):
    figs = {f.id: f for f in kfold_figures(searched)}
    assert list(figs) == [
        "accuracy", "metric-vs-optimizer.lr", "metric-vs-training.batch_size", "epochs",
        "timeline", "utilization",
    ]  # fmt: skip  # none for model.hidden, a JSON column
    lr, batch = figs["metric-vs-optimizer.lr"], figs["metric-vs-training.batch_size"]
    assert lr.file == "metric_vs_optimizer.lr.png"
    assert lr.figure.axes[0].get_xscale() == "log"
    assert batch.figure.axes[0].get_xscale() == "linear"
    ok = pd.read_parquet(searched / "jobs").query("status == 'ok'")
    for fig, column in ((lr, "optimizer.lr"), (batch, "training.batch_size")):
        ax = fig.figure.axes[0]
        xs = {float(x) for c in ax.collections for x, _ in c.get_offsets()}
        assert sorted(xs) == pytest.approx(sorted(set(ok[column].astype(float))))
        assert len(xs) == N_CONFIGS
        grey = {  # the raced-out configurations' finished folds: grey x's
            float(x)
            for c in ax.collections
            if len(c.get_facecolor()) and tuple(c.get_facecolor()[0][:3]) == (0.55, 0.55, 0.55)
            for x, _ in c.get_offsets()
        }
        raced = ok[ok["config"].isin([_config(i) for i in RACED])][column].astype(float)
        assert sorted(grey) == pytest.approx(sorted(set(raced)))
        labels = [t.get_text() for lg in fig.figure.legends for t in lg.get_texts()]
        assert "raced out: its finished folds" in labels and "one fold" in labels
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
        fig.figure.canvas.draw()
    assert main(["report", str(searched)]) == 0
    out = capsys.readouterr().out
    assert "metric_vs_optimizer.lr.png" in out and "metric_vs_model.hidden" not in out
    assert (searched / "report" / "metric_vs_training.batch_size.png").is_file()
    assert 'id="fig-metric-vs-optimizer.lr"' in (searched / "report.html").read_text()


@pytest.mark.timeout(60)
def test_the_accuracy_figure_shows_the_best_20_configurations(tmp_path):
    rows = [
        {"config": f"m/s/x={i}", "model": "m", "scheduler": "s", "fold": f, "status": "ok",
         "val_accuracy": i / 100 + f / 1000, "test_accuracy": 0.5}
        for i in range(25) for f in range(2)
    ]  # fmt: skip
    fig = plots.accuracy_figure(pd.DataFrame(rows))
    assert "the best 20 of 25" in fig.get_suptitle()
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert (
        len(ticks) == 20 and ticks[0].startswith("m/s/x=24 ") and ticks[-1].startswith("m/s/x=5 ")
    )
    few = plots.accuracy_figure(pd.DataFrame(rows[:6]))
    assert "best" not in few.get_suptitle() and len(few.axes[0].get_yticklabels()) == 3


@pytest.mark.timeout(60)
def test_against_pairs_by_configuration_and_fold(searched, tmp_path):
    shift = {i: 0.01 * (i % 3) for i in range(N_CONFIGS)}
    other_rows = [
        {**r, "val_accuracy": r["val_accuracy"] - shift[int(r["job_id"].split("-")[2], 16)]}
        for r in _rows()
        if r["fold"] != 0 or r["config"] != _config(0)  # one fold fewer: left out
    ]
    other = _write_run(tmp_path / "other", other_rows)
    pairs = paired_folds(pd.read_parquet(searched / "jobs"), pd.read_parquet(other / "jobs"))
    n_ok = sum(RACED.get(i, FOLDS) for i in range(N_CONFIGS))
    assert len(pairs) == n_ok - 1 and not pairs.duplicated(["config", "fold"]).any()
    assert pairs["difference"].round(6).tolist() == [
        round(shift[next(i for i in range(N_CONFIGS) if _config(i) == c)], 6)
        for c in pairs["config"]
    ]
    text = compare(searched, other)
    assert "paired by (configuration, fold)" in text and "1 ok job(s) in only one" in text
    rows = _table(text, "| model | scheduler | hidden | lr | batch_size | folds | val accuracy A")
    assert len(rows) == N_CONFIGS
    for i in range(N_CONFIGS):
        v = _values(i)
        row = next(r for r in rows if r[3] == f"{v['optimizer.lr']:.4g}")
        n = RACED.get(i, FOLDS) - (i == 0)
        vals = [_accuracy(i, f) for f in range(int(i == 0), RACED.get(i, FOLDS))]
        assert row[5] == str(n)
        assert float(row[6]) == pytest.approx(statistics.mean(vals), abs=1e-4)
        assert float(row[8]) == pytest.approx(shift[i], abs=1e-4)


def _searched_spec(tmp_path):
    return make_spec(
        tmp_path, folds=2, models=[{"name": "mlp", "args": {"hidden": {"grid": [[16], [32]]}}}],
        optimizer={"lr": {"loguniform": [1e-3, 1e-1]}}, training={"epochs": 1},
        search={"samples": 2, "seed": 0},
    )  # fmt: skip


@pytest.mark.timeout(120)
def test_a_real_searched_run_reports_by_configuration(tmp_path):
    from raynn.kfold.runner import run

    run_dir = run(_searched_spec(tmp_path), executor="serial", progress=False).run_dir
    text = (run_dir / "report.md").read_text()
    rows = _table(text, "| model | scheduler | hidden | lr | ok |")
    assert len(rows) == 4 and {r[2] for r in rows} == {"[16]", "[32]"}
    means = [float(r[5].split(" ± ")[0]) for r in rows]
    assert means == sorted(means, reverse=True)
    figs = [f.file for f in kfold_figures(run_dir)]
    assert "metric_vs_optimizer.lr.png" in figs and not any("hidden" in f for f in figs)


@pytest.mark.timeout(30)
def test_log_axis_for_loguniform_and_wide_positive_grids_only():
    from raynn.runs.search_figures import log_axis, value_text

    jobs = pd.DataFrame({"a": [1e-4, 1e-3, 1e-2], "b": [1.0, 2.0, 3.0], "c": [-1.0, 0.0, 5.0]})
    assert log_axis(jobs, {"name": "b", "kind": "loguniform"})
    assert log_axis(jobs, {"name": "a", "kind": "grid"})  # 100x: a log grid
    assert not log_axis(jobs, {"name": "a", "kind": "uniform"})
    assert not log_axis(jobs, {"name": "b", "kind": "grid"})
    assert not log_axis(jobs, {"name": "c", "kind": "grid"})
    assert [value_text(v, t) for v, t in ((3.0, "int64"), (0.0031623, "float64"))] == [
        "3", "0.003162"
    ]  # fmt: skip
    assert value_text(math.nan, "float64") == value_text(None, "json") == "-"


@pytest.mark.timeout(30)
def test_a_run_without_jobs_still_summarizes(tmp_path):
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"spec": {"name": "e"}, "runs": []}))
    text = summarize(run_dir)
    assert "- jobs: 0 ok, 0 failed" in text and "Fold racing" not in text
    assert [f.id for f in kfold_figures(run_dir)] == [
        "accuracy",
        "epochs",
        "timeline",
        "utilization",
    ]
