"""The CLI's choices come from the tables that hold the names: ``--executor`` from the
executors' registry (plus ``auto``), the benches' ``--modes`` and ``--backends`` from
:mod:`raynn.bench.names`; building the parser imports no registry (no torch)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raynn.bench import names
from raynn.cli import RegistryChoices, _parser, main
from raynn.errors import RaynnError
from raynn.kfold.executors.base import EXECUTORS, Executor, register_executor
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(120)

TINY = {
    "kind": "kfold",
    "name": "choices",
    "folds": 2,
    "dataset": {"name": "digits", "limit": 100},
    "models": ["mlp"],
    "schedulers": ["none"],
    "training": {"epochs": 1, "batch_size": 32},
}


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def _one_executor_option(argv: list[str]) -> str:
    return _parser().parse_args(["run", "spec.yaml", *argv]).executor


def test_the_executor_choices_are_the_registry_s_and_auto(capsys):
    """``auto`` first, then every registered executor; the help shows them as argparse does."""
    import raynn.kfold.executors.factory  # noqa: F401 - registers the built-in executors

    expected = ["auto", *sorted(EXECUTORS)]
    assert {"local", "ray", "serial"} <= set(EXECUTORS)
    assert "--executor {" + ",".join(expected) + "}" in _help(["run"], capsys)
    for name in expected:
        assert _one_executor_option(["--executor", name]) == name
    with pytest.raises(SystemExit) as info:
        _one_executor_option(["--executor", "bogus"])
    assert info.value.code == 2
    assert "invalid choice: 'bogus' (choose from 'auto', 'local', 'ray', 'serial'" in (
        capsys.readouterr().err
    )


class _Refused(RaynnError):
    pass


def test_registering_an_executor_makes_it_a_cli_choice(tmp_path: Path, capsys):
    """An executor registered beside the built-in ones is a choice of ``raynn run
    --executor`` (help, parsing, and the run calls its factory); unregistered, it is not."""
    import raynn.kfold.executors.factory  # noqa: F401 - the built-ins first

    name = "test_cli_probe"
    calls: list[dict] = []

    def factory(**options: object) -> Executor:
        calls.append(options)
        raise _Refused(f"{name} called with {sorted(options)}")

    assert name not in EXECUTORS
    register_executor(name, factory)
    try:
        assert f",{name}" in _help(["run"], capsys).split("--executor ", 1)[1].split("}")[0]
        assert _one_executor_option(["--executor", name]) == name
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump(TINY))
        code = main(["run", str(spec), "--executor", name, "--output", str(tmp_path / "runs")])
        err = capsys.readouterr().err
        assert code == 2 and err.strip() == f"raynn: error: {name} called with ['smt']", err
        assert len(calls) == 1
    finally:
        EXECUTORS.pop(name, None)
    assert name not in EXECUTORS
    with pytest.raises(SystemExit):
        _one_executor_option(["--executor", name])
    capsys.readouterr()


def test_registry_choices_read_the_registry_each_time():
    """The fixed names first, then the registry's sorted, read afresh (nothing cached)."""
    table = {"b": 1, "a": 2}
    choices = RegistryChoices(["auto"], lambda: table)
    assert list(choices) == ["auto", "a", "b"] and str(choices) == "{auto,a,b}"
    table["c"] = 3
    assert "c" in choices and list(choices)[-1] == "c"
    assert "d" not in choices


def test_building_the_parser_imports_no_torch():
    """``raynn --version`` and the parser stay quick: the registries load when read."""
    code = (
        "import sys; from raynn.cli import _parser; p = _parser(); "
        "p.parse_args(['validate', 'x.yaml']); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize(
    ("bench", "option", "table", "default"),
    [
        ("kfold", "modes", names.KFOLD_MODES, names.KFOLD_DEFAULT),
        ("hogwild", "modes", names.HOGWILD_MODES, names.HOGWILD_DEFAULT),
        ("sklearn", "backends", names.SKLEARN_BACKENDS, tuple(names.SKLEARN_BACKENDS)),
        ("search", "modes", names.SEARCH_MODES, names.SEARCH_DEFAULT),
    ],
)
def test_bench_options_list_the_bench_tables(bench, option, table, default, capsys):
    """Each bench's option lists every name of its table, and its default is names of it."""
    assert set(default) <= set(table)
    text = " ".join(_help(["bench", bench], capsys).split())
    listed = text.split("comma-separated: ", 1)[1]
    listed = re.sub(r" \([^)]*\)", "", listed).split(" --", 1)[0]  # the names, no words
    assert re.findall(r"(?:^|, )(\w+)", listed) == list(table), listed
    argv = ["bench", bench] + ([] if bench == "sklearn" else ["--spec", "s.yaml"])
    assert getattr(_parser().parse_args(argv), option) == ",".join(default)


def test_the_benches_take_their_names_from_the_tables():
    """The benches check modes against the same tables the options list."""
    pytest.importorskip("pandas")
    from raynn.bench import hogwild_runs, kfold_modes, search, search_peers, search_summary
    from raynn.bench import sklearn as bench_sklearn

    assert kfold_modes.MODES == tuple(names.KFOLD_MODES)
    assert set(kfold_modes.RAYNN_MODES) | set(kfold_modes.PEERS) <= set(kfold_modes.MODES)
    assert hogwild_runs.MODES == tuple(names.HOGWILD_MODES)
    assert bench_sklearn.BACKENDS == tuple(names.SKLEARN_BACKENDS)
    assert search.MODES == ("full", *search_summary.RAYNN_MODES, *search_peers.PEERS)
