"""docs/RESULTS.md's ways of reading a run's tables (pandas, polars, duckdb) work as written."""

from __future__ import annotations

import re

import pytest

from raynn.kfold.runner import run
from tests.conftest import REPO, make_spec


def _blocks() -> list[str]:
    text = (REPO / "docs" / "RESULTS.md").read_text()
    section = text.split("## Reading the tables", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("docs")
    spec = make_spec(tmp, folds=2, models=["mlp"], training={"epochs": 2})
    return run(spec, executor="serial", progress=False).run_dir


def test_the_section_has_a_block_per_reader():
    heads = [b.split("\n", 1)[0] for b in _blocks()]
    assert heads == ["import pandas as pd", "import polars as pl", "import duckdb"]


@pytest.mark.parametrize("block", _blocks(), ids=["pandas", "polars", "duckdb"])
def test_each_documented_query_runs_in_a_run_directory(block, run_dir, capsys, monkeypatch):
    module = block.split("\n", 1)[0].split()[1]
    pytest.importorskip(module)
    monkeypatch.chdir(run_dir)
    exec(compile(block, f"docs/RESULTS.md ({module})", "exec"), {})
    out = capsys.readouterr().out
    assert "mlp" in out and "cosine" in out, out  # the run's one configuration, by name
