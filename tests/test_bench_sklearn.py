"""``raynn bench sklearn`` on a tiny grid: the table's rows and columns, and parity."""

from __future__ import annotations

import json

import pytest

from raynn.bench.sklearn import COLUMNS, bench_sklearn
from raynn.errors import RaynnError


@pytest.fixture
def ray_up():
    """An embedded Ray started beforehand (raynn's backend joins it: the test skips a start)."""
    from raynn.placement import session

    started = session.connect(num_cpus=2)
    yield
    session.shutdown_if_started(started)


@pytest.mark.ray
def test_bench_sklearn_tiny_grid(tmp_path, ray_up):
    """loky and raynn on a 2x2 grid: one row each, every column, raynn equal to loky."""
    pytest.importorskip("skorch")
    table, out = bench_sklearn(
        ["raynn", "loky"], tmp_path, grid_size=2, cv=2, epochs=1, limit=200, progress=False
    )
    assert list(table.columns) == COLUMNS
    assert list(table["backend"]) == ["loky", "raynn"]  # the reference first
    raynn_row = table.set_index("backend").loc["raynn"]
    assert raynn_row["best_params_equal"] == "yes" and raynn_row["best_score_equal"] == "yes"
    assert raynn_row["max_abs_diff"] == 0.0 and raynn_row["tasks"] == 8
    assert (table["wall_s"] > 0).all()
    summary = (out / "summary.md").read_text()
    assert "| backend | wall_s | cpu_pct |" in summary and "| raynn |" in summary
    runs = json.loads((out / "bench.json").read_text())["runs"]
    assert runs[1]["raynn"]["started_ray"] is False and len(runs[1]["raynn"]["records"]) == 8


def test_bench_sklearn_rejects_unknown_backend(tmp_path):
    with pytest.raises(RaynnError, match="unknown backend"):
        bench_sklearn(["dask"], tmp_path)
