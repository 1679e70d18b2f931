"""``raynn report``'s figures and report.html, ``--against``, and the sampler's own_percent
(issue 13)."""

from __future__ import annotations

import base64
import io
import math
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from scipy import stats

from raynn.cli import main
from raynn.hogwild.report import eval_figure, push_figure
from raynn.kfold.executors.serial import SerialExecutor
from raynn.kfold.report import compare, paired_folds, paired_p_value, paired_table, wall_seconds
from raynn.kfold.report import figures as kfold_figures
from raynn.kfold.runner import run
from raynn.kfold.tables import JOBS_SCHEMA
from raynn.placement.monitor import UtilizationSampler
from raynn.runs.results import read_table
from tests.conftest import make_spec
from tests.executors import wait_for

KFOLD_FIGURES = ["accuracy", "epochs", "timeline", "utilization"]
HOGWILD_FIGURES = ["eval", "pushes", "utilization"]


def _kfold(tmp_path, seed: int, lr: float = 0.003):
    spec = make_spec(
        tmp_path, seed=seed, optimizer={"lr": lr}, training={"epochs": 2},
        scheduling={"sample_interval": 0.1},
    )  # fmt: skip
    return run(spec, executor=SerialExecutor(threads=1), progress=False).run_dir


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory):
    """2 models x 1 scheduler x 2 folds x 2 epochs on digits, serial."""
    return _kfold(tmp_path_factory.mktemp("a"), seed=3)


@pytest.fixture(scope="module")
def other_run(tmp_path_factory):
    """The same grid and folds with another learning rate: the same jobs, other accuracies
    (another seed would make other folds: nothing to pair, issue 21)."""
    return _kfold(tmp_path_factory.mktemp("b"), seed=3, lr=0.001)


def _check_page(run_dir, ids):
    page = (run_dir / "report.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "url(" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(ids) and all(s.startswith("data:image/png;base64,") for s in sources)
    for fig_id in ids:
        assert f'<img id="fig-{fig_id}" alt="' in page
    for src in sources:
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert img.format == "PNG" and img.width >= 800 and img.height >= 250
    pngs = sorted((run_dir / "report").glob("*.png"))
    assert len(pngs) == len(ids)
    for png in pngs:
        img = Image.open(png)
        img.load()  # decodes the whole file
        assert 800 <= img.width <= 2000 and 250 <= img.height <= 1600, (png.name, img.size)
    return page


def _check_figure(fig):
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert fig.get_suptitle() or len(axes) == 1
    for ax in axes:
        assert ax.get_title() and ax.get_ylabel(), ax
        siblings = ax.get_shared_x_axes().get_siblings(ax)
        assert any(a.get_xlabel() for a in siblings), ax
    legends = list(fig.legends) + [ax.get_legend() for ax in axes if ax.get_legend()]
    assert legends and all(len(lg.get_texts()) <= 12 for lg in legends)
    fig.canvas.draw()  # renders: nothing raises


# -- K-fold ---------------------------------------------------------------------------------------
def test_report_writes_a_self_contained_page_and_every_figure(kfold_run, capsys):
    assert main(["report", str(kfold_run)]) == 0
    out = capsys.readouterr().out
    assert "| lenet | cosine | 2 |" in out  # the text summary stays
    assert f"report: {kfold_run / 'report.html'}" in out and f"{kfold_run / 'report'}/" in out
    page = _check_page(kfold_run, KFOLD_FIGURES)
    assert "<td>lenet</td>" in page  # the summary's table, as HTML
    assert "not split" not in page  # the serial executor measures its own processes


def test_kfold_figures_have_titles_labels_and_legends(kfold_run):
    figs = {f.id: f for f in kfold_figures(kfold_run)}
    assert list(figs) == KFOLD_FIGURES
    for f in figs.values():
        _check_figure(f.figure)
    titles = [ax.get_title() for ax in figs["utilization"].figure.axes]
    assert "raynn's own processes" in titles and "everything else on the machine" in titles
    # a line per configuration, its jobs apart (a NaN between two): each job its own epochs
    loss_ax = figs["epochs"].figure.axes[0]
    segments = [
        part
        for line in loss_ax.get_lines()
        for part in " ".join(str(x) for x in line.get_xdata()).split("nan")
    ]
    assert len(loss_ax.get_lines()) == 2 and [s.split() for s in segments] == [["1.0", "2.0"]] * 4
    # one row per CPU the jobs held on the timeline
    cpus = {c for cores in read_table(kfold_run, "jobs")["cores"] for c in cores}
    assert len(figs["timeline"].figure.axes[0].get_yticks()) == len(cpus)


def test_an_old_run_without_own_percent_draws_the_heatmap_unsplit(kfold_run, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(kfold_run, old)
    for file in (old / "utilization").glob("*.parquet"):
        pq.write_table(pq.read_table(file).drop(["own_percent"]), file)
    assert "own_percent" not in read_table(old, "utilization").columns
    assert main(["report", str(old)]) == 0
    assert "note: cpu_utilization_per_core.png: This run's utilisation table has no" in (
        capsys.readouterr().out
    )
    page = _check_page(old, KFOLD_FIGURES)
    assert "the heatmap is not split" in page
    fig = next(f.figure for f in kfold_figures(old) if f.id == "utilization")
    assert "not split" in fig.axes[0].get_title()


def test_figures_of_empty_tables_say_so():
    from raynn.runs import figures

    jobs = read_table("/nonexistent", "jobs")
    for fig in (
        figures.accuracy_figure(jobs),
        figures.epochs_figure(jobs, read_table("/nonexistent", "epochs")),
        figures.timeline_figure(jobs),
        figures.utilization_figure(read_table("/nonexistent", "utilization")),
    ):
        assert fig.get_suptitle() or fig.axes[0].get_title()
        assert any(t.get_text() for ax in fig.axes for t in ax.texts)
        fig.canvas.draw()


# -- --against ------------------------------------------------------------------------------------
def _jobs(rows):
    return pd.DataFrame(
        [
            dict(zip(["model", "scheduler", "fold", "status", "val_accuracy"], r, strict=True))
            for r in rows
        ]
    )


def test_paired_table_pairs_folds_and_tests_the_differences():
    a = _jobs(
        [
            ("m", "s", 0, "ok", 0.90),
            ("m", "s", 1, "ok", 0.80),
            ("m", "s", 2, "ok", 0.85),
            ("m", "s", 3, "ok", 0.70),  # only in A: left out
            ("n", "s", 0, "ok", 0.50),
            ("n", "s", 1, "failed", math.nan),  # not ok: left out
        ]
    )
    b = _jobs(
        [
            ("m", "s", 2, "ok", 0.80),  # rows in another order: joined on the key, not the order
            ("m", "s", 0, "ok", 0.88),
            ("m", "s", 1, "ok", 0.81),
            ("n", "s", 0, "ok", 0.40),
            ("n", "s", 1, "ok", 0.45),
        ]
    )
    pairs = paired_folds(a, b)
    assert list(zip(pairs["model"], pairs["fold"], strict=True)) == [
        ("m", 0), ("m", 1), ("m", 2), ("n", 0)
    ]  # fmt: skip
    assert pairs["difference"].round(6).tolist() == [0.02, -0.01, 0.05, 0.1]
    table = paired_table(pairs).set_index("model")
    m = table.loc["m"]
    assert m["folds"] == 3
    assert m["run"] == pytest.approx(0.85) and m["other"] == pytest.approx(0.83)
    assert m["difference"] == pytest.approx(0.02)
    d = [0.02, -0.01, 0.05]  # the paired t statistic by hand
    mean, sd = sum(d) / 3, math.sqrt(sum((x - sum(d) / 3) ** 2 for x in d) / 2)
    p = 2 * stats.t.sf(abs(mean / (sd / math.sqrt(3))), 2)
    assert m["p_value"] == pytest.approx(p) and 0.3 < p < 0.5
    assert m["p_value"] == pytest.approx(stats.ttest_rel([0.9, 0.8, 0.85], [0.88, 0.81, 0.8])[1])
    assert math.isnan(table.loc["n", "p_value"])  # one pair: nothing to test
    assert math.isnan(paired_p_value([0.5, 0.6], [0.5, 0.6]))  # identical
    assert paired_p_value([0.6, 0.7], [0.5, 0.6]) == 0.0  # the same non-zero difference


def test_against_compares_two_runs_of_the_same_spec(kfold_run, other_run, capsys):
    assert main(["report", str(kfold_run), "--against", str(other_run)]) == 0
    out = capsys.readouterr().out.split(f"## {kfold_run.name} against {other_run.name}")[1]
    a, b = read_table(kfold_run, "jobs"), read_table(other_run, "jobs")
    for model in ("lenet", "mlp"):
        va = a[a["model"] == model].sort_values("fold")["val_accuracy"].tolist()
        vb = b[b["model"] == model].sort_values("fold")["val_accuracy"].tolist()
        diff = sum(va) / 2 - sum(vb) / 2
        p = (
            stats.ttest_rel(va, vb)[1]
            if len({x - y for x, y in zip(va, vb, strict=True)}) > 1
            else None
        )
        row = next(
            line for line in out.splitlines() if line.startswith(f"| {model} | cosine | 2 |")
        )
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[3]) == pytest.approx(sum(va) / 2, abs=1e-4)
        assert float(cells[4]) == pytest.approx(sum(vb) / 2, abs=1e-4)
        assert float(cells[5]) == pytest.approx(diff, abs=1e-4)
        if p is not None and not math.isnan(p):
            assert float(cells[6]) == pytest.approx(p, rel=1e-2)
    speedup = wall_seconds(other_run) / wall_seconds(kfold_run)
    assert f"= {speedup:.2f}x" in out
    assert f"{kfold_run.name} against {other_run.name}" in (kfold_run / "report.html").read_text()
    assert "identical" in compare(kfold_run, kfold_run)  # a run against itself


def test_against_refuses_runs_with_no_job_in_common(kfold_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(kfold_run, other)
    jobs = read_table(other, "jobs")
    shutil.rmtree(other / "jobs")
    (other / "jobs").mkdir()
    other_jobs = jobs.assign(model="vgg", config="vgg/" + jobs["scheduler"])  # pairs by config
    table = pa.Table.from_pandas(other_jobs, JOBS_SCHEMA, preserve_index=False)
    pq.write_table(table, other / "jobs" / "all.parquet")
    assert main(["report", str(kfold_run), "--against", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "have no ok job in common" in err[0]


# -- HOGWILD --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hogwild_run(tmp_path_factory):
    from raynn.hogwild.runner import run as run_hogwild
    from tests.test_hogwild import _spec

    spec = _spec(tmp_path_factory.mktemp("hog"), training={"epochs": 3})
    return run_hogwild(spec, executor="serial", threads=1, progress=False).run_dir


def test_hogwild_report_figures(hogwild_run, kfold_run, capsys):
    assert main(["report", str(hogwild_run)]) == 0
    assert "Test accuracy against time" in capsys.readouterr().out
    _check_page(hogwild_run, HOGWILD_FIGURES)
    evals = read_table(hogwild_run, "eval")
    fig = eval_figure(evals)
    _check_figure(fig)
    assert len(fig.axes[1].get_lines()[0].get_xdata()) == len(evals)
    workers = pd.DataFrame(
        {
            "worker": ["a-0", "a-1", "b-0"],
            "node": ["a", "a", "b"],
            "slot": [0, 1, 0],
            "pushes": [40, 0, 30],
            "refused": [2, 0, 0],
            "staleness_hist": [[30, 10], [], [10, 15, 5]],
        }
    )
    fig = push_figure(workers)
    _check_figure(fig)
    bars = [p.get_height() for p in fig.axes[0].patches]
    assert bars == [40, 30, 2, 0]  # pushing workers only; refused stacked on top
    assert [list(line.get_ydata()) for line in fig.axes[1].get_lines()] == [
        [0.75, 0.25], pytest.approx([1 / 3, 1 / 2, 1 / 6])
    ]  # fmt: skip
    assert main(["report", str(kfold_run), "--against", str(hogwild_run), "--no-html"]) == 2
    assert "is a HOGWILD run" in capsys.readouterr().err


# -- the sampler's own_percent ----------------------------------------------------------------
@pytest.mark.timeout(300)
def test_sampler_attributes_own_cpu_time_to_the_pinned_core():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    pin = f"import os, sys; os.sched_setaffinity(0, {{{cpus[0]}}}); print(1, flush=True)"
    busy = subprocess.Popen(
        [sys.executable, "-c", pin + "\nwhile 1: pass"], stdout=subprocess.PIPE, text=True
    )
    assert busy.stdout.readline().strip() == "1"  # pinned: all its time is on cpus[0]
    try:
        sampler = UtilizationSampler("n", 0.05, own_pids=[])
        plain = UtilizationSampler("n", 0.05)
        sampler.watch(busy.pid)
        sampler.start()
        plain.start()
        # until the busy process shows on its core: however little CPU a loaded machine gives
        # it, all of it is on cpus[0] (how much is not the test's to say)
        wait_for(lambda: any(r["core"] == cpus[0] and r["own_percent"] > 0 for r in sampler._rows))
        rows, plain_rows = sampler.stop(), plain.stop()
    finally:
        busy.kill()
        busy.wait()
    assert any(r["core"] == cpus[0] and r["own_percent"] > 0 for r in rows)
    assert all(r["own_percent"] == 0 for r in rows if r["core"] != cpus[0])
    assert plain_rows and all(r["own_percent"] is None for r in plain_rows)  # not measured


@pytest.mark.timeout(60)
def test_a_sampler_stopped_before_its_first_interval_still_has_a_sample():
    """A run shorter than the interval (a tiny grid) still gets a utilisation line."""
    import psutil

    sampler = UtilizationSampler("n", 3600.0, own_pids=[os.getpid()])
    sampler.start()
    rows = sampler.stop()
    assert sorted(r["core"] for r in rows) == list(range(psutil.cpu_count()))
    assert all(r["own_percent"] is not None for r in rows)


def test_the_run_path_does_not_import_matplotlib():
    code = (
        "import sys, raynn.cli, raynn.kfold.runner, raynn.kfold.report, raynn.hogwild.runner, "
        "raynn.hogwild.report, raynn.runs.figures\n"
        "print([m for m in sys.modules if m.split('.')[0] == 'matplotlib'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
