"""Malformed specs: one line naming the key and the fix, exit code 2, nothing written."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raynn.cli import main
from tests.conftest import REPO, TINY


def _write(tmp_path: Path, raw: dict) -> Path:
    raw = copy.deepcopy(raw)
    raw["output"] = {"dir": str(tmp_path / "runs")}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _with(path: str, value: object) -> dict:
    raw = copy.deepcopy(TINY)
    *parents, leaf = path.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return raw


SEARCH_CASES = (
    "empty grid",
    "loguniform from 0",
    "loguniform lo >= hi",
    "domain where none goes",
    "misspelt model arg",
    "batch size 0 in a grid",
    "space above max_jobs",
    "unknown search key",
)
CASES = {
    "unknown top key": (_with("epochs", 3), "'epochs'", "valid top-level keys"),
    "unknown section key": (_with("training.epoch", 3), "training.epoch", "valid keys"),
    "unknown model": (_with("models", ["lenet", "resnet9000"]), "resnet9000", "lenet"),
    "unknown scheduler": (_with("schedulers", ["cosine", "linear"]), "linear", "onecycle"),
    "unknown optimizer": (_with("optimizer.name", "rmsprop"), "optimizer.name", "adamw"),
    "unknown dataset": (_with("dataset.name", "imagenet"), "dataset.name", "synthetic"),
    "unknown kind": (_with("kind", "bagging"), "'kind'", "kfold"),
    "one fold": (_with("folds", 1), "'folds'", ">= 2"),
    "folds above smallest class": (
        {**_with("dataset.limit", 40), "folds": 5},
        "'folds'",
        "at most 4 folds",
    ),
    "zero epochs": (_with("training.epochs", 0), "training.epochs", "1 or more"),
    "negative batch": (_with("training.batch_size", -8), "training.batch_size", "1 or more"),
    "zero lr": (_with("optimizer.lr", 0), "optimizer.lr", "above 0"),
    "string lr": (_with("optimizer.lr", "fast"), "optimizer.lr", "above 0"),
    "cores above node": (_with("scheduling.cores_per_job", 4096), "cores_per_job", "at most"),
    "bad cores setting": (_with("scheduling.cores_per_job", "many"), "cores_per_job", "auto"),
    "bad smt setting": (_with("scheduling.smt", "share"), "scheduling.smt", "together or idle"),
    "old checkpoint key": (
        _with("training.checkpoint_every", 1),
        "training.checkpoint_every",
        "checkpoint_seconds",
    ),
    "missing dataset root": (
        {**_with("dataset.name", "mnist"), "dataset": {"name": "mnist", "root": "/nonexistent"}},
        "/nonexistent",
        "RAYNN_DATA",
    ),
    "models not a list": (_with("models", {"nam": "lenet"}), "models[0]", "valid keys"),
    # search domains: refused before the data loads (the dataset root does not exist)
    "empty grid": (_with("optimizer.lr", {"grid": []}), "optimizer.lr", "at least one value"),
    "loguniform from 0": (
        _with("optimizer.lr", {"loguniform": [0, 0.1]}),
        "optimizer.lr",
        "bounds above 0",
    ),
    "loguniform lo >= hi": (
        _with("optimizer.lr", {"loguniform": [0.1, 0.01]}),
        "optimizer.lr",
        "swap or widen",
    ),
    "domain where none goes": (
        _with("scheduling.max_workers", {"grid": [1, 2]}),
        "scheduling.max_workers",
        "search only",
    ),
    "misspelt model arg": (
        _with("models", [{"name": "mlp", "args": {"hiden": {"grid": [[64]]}}}]),
        "models[0].args.hiden",
        "hidden",
    ),
    "batch size 0 in a grid": (
        _with("training.batch_size", {"grid": [64, 0]}),
        "training.batch_size",
        "1 or more",
    ),
    "space above max_jobs": (
        {**_with("optimizer.lr", {"loguniform": [1e-4, 1e-1]}), "search": {"samples": 30000}},
        "60000 configurations x 2 folds = 120000 jobs",
        "raise search.max_jobs",
    ),
    "unknown search key": (_with("search.sample", 3), "search.sample", "valid keys: samples"),
}
# each search case fails on the spec alone: with a dataset that cannot load, still the same
for _case in [c for c in CASES if c in SEARCH_CASES]:
    _raw, _key, _fix = CASES[_case]
    CASES[f"{_case}, no data"] = (
        {**_raw, "dataset": {"name": "mnist", "root": "/nonexistent"}},
        _key,
        _fix,
    )


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_spec_exits_2_with_one_line(case, command, tmp_path, capsys):
    raw, key, fix = CASES[case]
    spec = _write(tmp_path, raw)
    args = [command, str(spec)] + (["--no-progress"] if command == "run" else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("raynn: error: "), err
    assert key in err and fix in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("kind: kfold\nmodels: [lenet\nfolds: 2\n")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "line" in err


def test_missing_spec_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "spec file not found" in capsys.readouterr().err


def test_unwritable_output_dir_is_refused_before_any_work(tmp_path, capsys):
    spec = _write(tmp_path, TINY)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = main(["run", str(spec), "--serial", "--no-progress", "--output", str(blocker / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--output" in err


def test_cli_process_prints_no_traceback(tmp_path):
    spec = _write(tmp_path, _with("models", ["nonet"]))
    proc = subprocess.run(
        [sys.executable, "-m", "raynn", "run", str(spec)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nonet" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_safe_yaml_refuses_python_tags(tmp_path, capsys):
    spec = tmp_path / "evil.yaml"
    spec.write_text("kind: !!python/object/apply:os.system ['true']\n")
    assert main(["validate", str(spec)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_shipped_specs_validate(capsys, monkeypatch):
    monkeypatch.setenv("RAYNN_DATA", str(REPO.parent / "shared" / "data"))
    assert main(["validate", str(REPO / "jobs" / "kfold_digits.yaml")]) == 0
    assert "30 jobs" in capsys.readouterr().out


@pytest.mark.parametrize(
    "spec", sorted((REPO / "benchmarks" / "specs").glob("*.yaml")), ids=lambda p: p.stem
)
def test_benchmark_specs_validate(spec, capsys, monkeypatch):
    data = REPO.parent / "shared" / "data"
    if yaml.safe_load(spec.read_text())["dataset"]["name"] == "mnist":
        if not (data / "MNIST").is_dir():  # a checkout without the workplace's shared data
            pytest.skip(f"MNIST is not in {data}")
    monkeypatch.setenv("RAYNN_DATA", str(data))
    assert main(["validate", str(spec)]) == 0
    assert f"{spec}: ok: " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("raw", "keys", "fixes"),
    [
        (
            {**_with("training.epoch", 3), "dataset": {**TINY["dataset"], "nam": "digits"}},
            ["'dataset.nam'", "'training.epoch'"],
            ["valid keys in dataset: name,", "valid keys in training: epochs,"],
        ),
        (
            {"kind": "hogwild", "epochs": 1, "training": {"epoch": 3}, "hogwild": {"push": 5}},
            ["'epochs'", "'training.epoch'", "'hogwild.push'"],
            [
                "valid top-level keys: name, kind,",
                "valid keys in training: epochs,",
                "valid keys in hogwild: workers_per_node,",
            ],
        ),
    ],
    ids=["kfold", "hogwild"],
)
def test_unknown_keys_in_several_sections_are_reported_together(raw, keys, fixes, tmp_path, capsys):
    assert main(["validate", str(_write(tmp_path, raw))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("raynn: error: spec keys "), err
    assert f"{len(keys)} unknown keys" in err, err
    for text in keys + fixes:
        assert text in err, err
