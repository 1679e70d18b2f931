"""Search spaces: domains in a spec, the configurations they make, and a searched run's
tables, racing, best configuration and the seed API's learning-rate sweep."""

from __future__ import annotations

import copy
import hashlib
import json
import math

import pandas as pd
import pytest
import torch

import raynn
from raynn.kfold.grid import Job
from raynn.kfold.runner import prepare
from raynn.kfold.runner import run as run_kfold
from raynn.kfold.train import train_job
from raynn.spec import spec_from_dict
from raynn.spec.search import configurations
from tests.conftest import TINY


def _seed(*parts: object) -> int:
    """The 31-bit job seed, written out here as the docs define it (not imported)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _spec(**changes: object) -> dict:
    raw = copy.deepcopy(TINY)
    raw.update(changes)
    return raw


@pytest.mark.timeout(300)
def test_a_spec_without_domains_runs_as_before(tmp_path):
    """Same jobs, job ids and seeds as a plain model x scheduler grid, and each job's
    metrics those of the same job built by hand and trained directly."""
    raw = _spec(models=["mlp"], schedulers=["cosine", "none"], training={"epochs": 2})
    spec = spec_from_dict(raw)
    plan = prepare(spec)
    expected = {
        f"{m}-{s}-f{f}": _seed(raw["seed"], m, s, f)
        for m in ["mlp"]
        for s in ["cosine", "none"]
        for f in range(raw["folds"])
    }
    assert {j.job_id: j.seed for j in plan.jobs} == expected
    result = run_kfold(spec, executor="serial", output=str(tmp_path), progress=False, threads=1)
    rows = result.jobs.set_index("job_id")
    assert set(rows.index) == set(expected)
    assert set(rows["config"]) == {"mlp/cosine", "mlp/none"}
    for job_id, seed in expected.items():
        model, sched, fold = job_id.split("-")
        job = Job(
            job_id, 0, spec.models[0], next(s for s in spec.schedulers if s.label == sched),
            int(fold[1:]), seed, optimizer=spec.optimizer, training=spec.training,
        )  # fmt: skip
        alone = train_job(job, plan.data, threads=1)
        assert rows.loc[job_id, "val_accuracy"] == alone.val_accuracy
        assert rows.loc[job_id, "val_loss"] == pytest.approx(alone.val_loss, abs=1e-12)


SPACE = {
    "models": [{"name": "mlp", "args": {"hidden": {"grid": [[32], [64, 32]]}}}],
    "schedulers": ["cosine"],
    "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-4, 1.0]}},
    "training": {"epochs": 2, "batch_size": {"choice": [16, 32, 64]}},
    "search": {"samples": 4, "seed": 7},
}


@pytest.mark.timeout(60)
def test_grids_cross_and_draws_depend_only_on_the_spec():
    spec = spec_from_dict(_spec(**SPACE))
    configs = configurations(spec)
    assert len(configs) == 2 * 4  # 2 grid points x 4 samples (no draw repeats here)
    assert {c.model.args["hidden"][0] for c in configs} == {32, 64}
    again = configurations(spec_from_dict(spec.to_dict()))  # run.json's spec: a resume
    assert [c.id for c in again] == [c.id for c in configs]
    other = configurations(spec_from_dict(_spec(**{**SPACE, "search": {"samples": 4}})))
    assert {c.optimizer.lr for c in other} != {c.optimizer.lr for c in configs}
    for c in configs:
        lr, hidden, batch = c.optimizer.lr, c.model.args["hidden"], c.training.batch_size
        assert 1e-4 <= lr <= 1.0 and batch in (16, 32, 64)
        shown = json.dumps(hidden).replace(" ", "")
        assert c.id == f"mlp/cosine/hidden={shown},lr={lr!r},batch_size={batch}"
        assert c.key == hashlib.sha256(c.id.encode()).hexdigest()[:8]


@pytest.mark.timeout(60)
def test_draws_follow_their_distributions():
    raw = _spec(
        models=["mlp"],
        optimizer={"name": "adam", "lr": {"loguniform": [1.0e-4, 1.0]}},
        training={"epochs": {"randint": [2, 5]}},
        search={"samples": 400, "seed": 0},
    )
    configs = configurations(spec_from_dict(raw))
    lrs = [c.optimizer.lr for c in configs]
    epochs = [c.training.epochs for c in configs]
    assert set(epochs) == {2, 3, 4}  # hi is exclusive, both ends drawn
    below = sum(lr < 1e-2 for lr in lrs) / len(lrs)  # half the log range: p = 0.5
    assert abs(below - 0.5) < 4 * math.sqrt(0.25 / len(lrs))
    assert all(float(f"{lr:.4g}") == lr for lr in lrs)


@pytest.mark.timeout(60)
def test_python_domains_are_the_yaml_ones():
    assert raynn.grid([1, 2]) == {"grid": [1, 2]}
    assert raynn.loguniform(1e-4, 1e-1) == {"loguniform": [1e-4, 1e-1]}
    spec = spec_from_dict(_spec(optimizer={"name": "adam", "lr": raynn.grid([1e-3, 1e-2])}))
    assert [(c.model.label, c.optimizer.lr) for c in configurations(spec)] == [
        ("lenet", 1e-3), ("lenet", 1e-2), ("mlp", 1e-3), ("mlp", 1e-2)
    ]  # fmt: skip


RACE = {
    "folds": 3,
    "models": [{"name": "mlp", "args": {"hidden": [32]}}],
    "schedulers": ["cosine"],
    "optimizer": {"name": "adam", "lr": {"grid": [0.01, 0.003, 8.0, 20.0]}},
    "training": {"epochs": 3, "batch_size": {"grid": [32]}},
    "scheduling": {"racing": {"min_folds": 2}},
    "output": {"keep_models": "best", "refit": True},
}


@pytest.fixture(scope="module")
def searched_run(tmp_path_factory):
    spec = spec_from_dict(_spec(**RACE))
    root = tmp_path_factory.mktemp("searched")
    return run_kfold(spec, executor="serial", output=str(root), progress=False, threads=1)


@pytest.mark.timeout(300)
def test_searched_tables_have_a_config_column_and_typed_columns(searched_run):
    run_dir = searched_run.run_dir
    jobs = pd.read_parquet(run_dir / "jobs")
    epochs = pd.read_parquet(run_dir / "epochs")
    assert jobs["optimizer.lr"].dtype == "float64"
    assert jobs["training.batch_size"].dtype == "int64"
    assert set(jobs.groupby("config").size()) == {3}
    for row in jobs.to_dict("records"):
        assert row["config"] == f"mlp/cosine/lr={row['optimizer.lr']!r},batch_size=32"
        assert row["seed"] == _seed(3, row["config"], row["fold"])
    assert set(epochs["config"]) == set(jobs["config"])
    assert set(epochs["optimizer.lr"]) == {0.01, 0.003, 8.0, 20.0}
    meta = json.loads((run_dir / "run.json").read_text())
    listed = {c["config"]: c["values"] for c in meta["search"]["configurations"]}
    assert listed == {
        c: {"optimizer.lr": lr, "training.batch_size": 32}
        for c, lr in jobs.groupby("config")["optimizer.lr"].first().items()
    }
    duckdb = pytest.importorskip("duckdb")
    low = duckdb.sql(
        f"""SELECT DISTINCT config FROM '{run_dir}/jobs/*.parquet' WHERE "optimizer.lr" < 1"""
    ).fetchall()
    expected = sorted(set(jobs.loc[jobs["optimizer.lr"] < 1, "config"]))
    assert sorted(c for (c,) in low) == expected
    pl = pytest.importorskip("polars")
    frame = pl.read_parquet(f"{run_dir}/jobs/*.parquet")
    assert sorted(frame.filter(pl.col("optimizer.lr") < 1)["config"].unique()) == expected
    assert frame.group_by("config").len()["len"].to_list() == [3] * 4


@pytest.mark.timeout(300)
def test_racing_drops_the_bad_rates_and_the_best_configuration_is_kept(searched_run):
    jobs = searched_run.jobs
    raced = set(jobs.loc[jobs["status"] == "raced_out", "config"])
    # trained in full, lr 0.01 scores about 0.88 on every fold, 0.003 about 0.65 (3 epochs
    # are too few for it) and 8 and 20 about 0.1
    best = "mlp/cosine/lr=0.01,batch_size=32"
    assert raced == set(jobs["config"]) - {best}
    assert (jobs.loc[jobs["config"] == best, "status"] == "ok").all()
    meta = json.loads((searched_run.run_dir / "run.json").read_text())
    assert meta["models"]["best"]["config"] == best
    assert meta["refit"]["config"] == best and meta["refit"]["status"] == "ok"
    model = raynn.load_model(searched_run.run_dir)
    assert model.info["job_id"] == meta["refit"]["job_id"]


@pytest.mark.timeout(300)
def test_async_kfold_sweeps_the_learning_rate_of_its_optimizer(tmp_path):
    from raynn.compat import AsyncKFold
    from tests.test_compat import TinyNet, TorchDigits

    def get_optimizer(model):
        return torch.optim.SGD(model.parameters(), lr=0.5)

    kfold = AsyncKFold(2, TorchDigits(), str(tmp_path), batch_size=32, executor="serial", threads=1)
    params = {"epochs": 1, "progress": False}
    table = kfold([TinyNet], ["none"], get_optimizer, params, lr=raynn.grid([1e-3, 1e-1]))
    assert sorted(table["optimizer.lr"].unique()) == [1e-3, 1e-1]
    epochs = pd.read_parquet(kfold.last_run.run_dir / "epochs")
    assert sorted(epochs["lr"].unique()) == [1e-3, 1e-1]  # the sweep's, not the factory's 0.5


@pytest.mark.timeout(60)
def test_yaml_numbers_without_a_dot_are_numbers(tmp_path):
    """YAML 1.2's float rule: ``1e-3`` is a number, as a spec writer means it (PyYAML's 1.1
    rule would read it as a string and refuse it)."""
    path = tmp_path / "spec.yaml"
    path.write_text(
        "kind: kfold\nmodels: [mlp]\noptimizer: {name: adam, lr: {loguniform: [1e-4, 1E-1]}}\n"
        "training: {epochs: 2, checkpoint_seconds: 5e1}\nsearch: {samples: 3}\n"
    )
    spec = raynn.load_spec(path)
    assert spec.search.space[0].args == (1e-4, 0.1)
    assert spec.training.checkpoint_seconds == 50.0
    path.write_text("kind: kfold\nmodels: [mlp]\nname: '1e-3'\noptimizer: {lr: 1e-3}\n")
    spec = raynn.load_spec(path)
    assert (spec.name, spec.optimizer.lr) == ("1e-3", 0.001)  # quoted stays a string
