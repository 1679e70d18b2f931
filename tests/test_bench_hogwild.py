"""``raynn bench hogwild``: every mode runs, the summary has one row per mode and worker count."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raynn.bench.hogwild import parse_workers, two_node_split
from raynn.cli import main
from raynn.errors import RaynnError
from tests.conftest import REPO

pytestmark = pytest.mark.ray


def _spec_file(tmp_path: Path, **hogwild: object) -> Path:
    raw = yaml.safe_load((REPO / "jobs" / "hogwild_digits.yaml").read_text())
    raw["training"].update({"epochs": 2, "eval_every_seconds": 0.2})
    raw["hogwild"].update({"push_every": 10, **hogwild})
    raw["output"] = {"dir": str(tmp_path / "runs")}
    path = tmp_path / "hogwild.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _bench(tmp_path: Path, *args: str) -> tuple[int, Path | None]:
    out = tmp_path / "bench"
    code = main(
        [
            "bench",
            "hogwild",
            "--spec",
            str(_spec_file(tmp_path)),
            "--output",
            str(out),
            "--no-progress",
            *args,
        ]
    )
    folders = sorted(out.glob("*")) if out.is_dir() else []
    return code, folders[0] if folders else None


def _check_rows(table: pd.DataFrame) -> None:
    assert table["finished"].all()
    assert (table["samples_per_second"] > 0).all()
    assert table["final_accuracy"].between(0.5, 1.0).all()
    assert (table["final_loss"] > 0).all()
    ttt = table["time_to_target_s"]
    assert (ttt.isna() | (ttt > 0)).all()


def test_every_mode_at_two_workers(tmp_path):
    code, folder = _bench(tmp_path, "--workers", "2", "--target", "0.8")
    assert code == 0 and folder is not None
    table = pd.read_parquet(folder / "summary.parquet")
    # serial runs once, as the one-worker reference; the others at the asked count
    pairs = list(zip(table["mode"], table["workers"], strict=True))
    assert pairs == [("serial", 1), ("raynn", 2), ("torch", 2), ("raynn_2node", 2)]
    _check_rows(table)
    assert table.loc[table["mode"] == "serial", "speedup_vs_serial"].iloc[0] == 1.0
    raynn = table[table["mode"] == "raynn"].iloc[0]
    torch_sps = table.loc[table["mode"] == "torch", "samples_per_second"].iloc[0]
    assert math.isclose(raynn["vs_torch"], raynn["samples_per_second"] / torch_sps)
    # one repeat: the spread is that one run against torch's
    assert raynn["vs_torch_min"] == raynn["vs_torch_max"] == raynn["vs_torch"]
    assert math.isnan(table.loc[table["mode"] == "serial", "vs_torch"].iloc[0])
    # the two-node run really used both nodes, split 1 + 1
    runs = pd.read_parquet(folder / "runs.parquet")
    two = Path(runs.loc[runs["mode"] == "raynn_2node", "run_dir"].iloc[0])
    workers = pd.read_parquet(two / "hogwild")
    assert workers["node"].nunique() == 2 and len(workers) == 2
    # every mode has a loss/accuracy curve ending in a final evaluation
    curves = pd.read_parquet(folder / "curves.parquet")
    for mode in ("serial", "torch", "raynn", "raynn_2node"):
        c = curves[curves["mode"] == mode]
        assert len(c) >= 2 and c["final"].iloc[-1] and c["final"].sum() == 1
    assert (folder / "summary.md").read_text().count("\n| ") == 5  # header + 4 rows
    assert (folder / "loss_vs_time.png").stat().st_size > 0
    info = json.loads((folder / "bench.json").read_text())
    assert info["workers"] == [2] and info["machine"]["cores"] >= 2
    assert info["spec"]["training"]["epochs"] == 2


def test_worker_counts_without_ray(tmp_path):
    code, folder = _bench(tmp_path, "--workers", "1,2", "--modes", "serial,torch", "--epochs", "3")
    assert code == 0 and folder is not None
    table = pd.read_parquet(folder / "summary.parquet")
    pairs = list(zip(table["mode"], table["workers"], strict=True))
    assert pairs == [("serial", 1), ("torch", 1), ("torch", 2)]
    _check_rows(table)
    assert (table.loc[table["mode"] == "torch", "vs_torch"] == 1.0).all()
    assert (table["samples"] == table["samples"].iloc[0]).all()  # 3 epochs of the same data
    assert json.loads((folder / "bench.json").read_text())["spec"]["training"]["epochs"] == 3


def test_torch_beside_an_idle_ray(tmp_path):
    import ray

    code, folder = _bench(tmp_path, "--workers", "1", "--modes", "torch,torch_ray", "--epochs", "1")
    assert code == 0 and folder is not None and not ray.is_initialized()  # Ray stopped again
    table = pd.read_parquet(folder / "summary.parquet")
    assert list(table["mode"]) == ["torch", "torch_ray"]
    _check_rows(table)
    sps = table.set_index("mode")["samples_per_second"]
    vs = table.set_index("mode")["vs_torch_ray"]
    assert vs["torch_ray"] == 1.0 and math.isclose(vs["torch"], sps["torch"] / sps["torch_ray"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--modes", "serial,hogwild"], "unknown bench mode"),
        (["--workers", "0"], "--workers"),
        (["--workers", "1,x"], "--workers"),
        (["--workers", "4096"], "usable cores"),
        (["--target", "95"], "--target"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, args, needle):
    code, folder = _bench(tmp_path, *args)
    err = capsys.readouterr().err
    assert code == 2 and folder is None
    assert needle in err and len(err.strip().splitlines()) == 1


def test_wrong_spec_kind_exits_2(tmp_path, capsys):
    spec = REPO / "jobs" / "kfold_digits.yaml"
    code = main(["bench", "hogwild", "--spec", str(spec), "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "kind: hogwild" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_two_nodes_need_staleness_of_one(tmp_path, capsys):
    spec = _spec_file(tmp_path, max_staleness=0)
    code = main(["bench", "hogwild", "--spec", str(spec), "--output", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "max_staleness" in err and len(err.strip().splitlines()) == 1


def test_parse_workers_and_split():
    assert parse_workers("1, 2,4") == [1, 2, 4]
    with pytest.raises(RaynnError, match="positive integers"):
        parse_workers("-1")
    with pytest.raises(RaynnError, match="empty"):
        parse_workers(",")
    assert [two_node_split(w) for w in (2, 3, 4)] == [(1, 1), (2, 1), (2, 2)]
