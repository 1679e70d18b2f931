"""Issue 21, items 8-10 and 12: bad command-line input gets one line and exit code 2; a run
works from any folder; ``--version``, ``--debug``, the default executor, ``--address``; the
report's CPU share; an interrupted bench stops its modes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
import yaml

from raynn._version import __version__
from raynn.cli import main
from raynn.errors import RaynnError, SpecError
from raynn.placement.processes import Zygote
from raynn.placement.session import free_port
from raynn.runs.report import utilization_text
from raynn.runs.results import UTILIZATION_SCHEMA, write_table
from raynn.spec import spec_from_dict
from tests.conftest import REPO
from tests.executors import wait_for

CPUS = len(os.sched_getaffinity(0))
TINY = {
    "kind": "kfold",
    "name": "inputs",
    "folds": 2,
    "dataset": {"name": "digits", "limit": 100},
    "models": ["mlp"],
    "schedulers": ["none"],
    "training": {"epochs": 1, "batch_size": 32},
}
HOGWILD = {
    "kind": "hogwild",
    "name": "hw",
    "dataset": {"name": "digits", "limit": 200},
    "training": {"epochs": 1},
}


def _spec(tmp_path: Path, raw: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _one_line(err: str) -> str:
    """The single ``raynn: error:`` line of ``err`` (fails if there is more)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raynn: error: "), err
    return lines[0]


def _cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``raynn ARGS`` as the console script runs it: the script's folder, not ``cwd``, is
    first on sys.path (``python -m raynn`` would import a ``raynn`` folder in ``cwd``)."""
    script = cwd.parent / f"{cwd.name}-bin" / "raynn_cli.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text("from raynn.cli import entry\nentry()\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # raynn itself, however it is installed
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("raw", [TINY, HOGWILD], ids=["kfold", "hogwild"])
@pytest.mark.parametrize("seed", [-1, 10**20])
def test_a_seed_numpy_cannot_take_is_one_line_and_no_run_directory(raw, seed, tmp_path, capsys):
    spec = _spec(tmp_path, {**raw, "seed": seed})
    code = main(["run", str(spec), "--serial", "--no-progress", "--output", str(tmp_path / "r")])
    assert code == 2
    line = _one_line(capsys.readouterr().err)
    assert "'seed'" in line and str(seed) in line and "2**32 - 1" in line
    assert not (tmp_path / "r").exists()  # HOGWILD made its run directory first


def test_seed_bounds_are_those_numpy_takes():
    import numpy as np

    top = 2**32 - 1
    np.random.RandomState(top)  # the largest seed numpy takes: accepted
    assert spec_from_dict({**TINY, "seed": top}).seed == top
    assert spec_from_dict({**HOGWILD, "seed": 0}).seed == 0
    for bad in (top + 1, -1):
        with pytest.raises(ValueError):
            np.random.RandomState(bad)
        with pytest.raises(SpecError, match="seed"):
            spec_from_dict({**TINY, "seed": bad})
    with pytest.raises(SpecError, match="dataset.seed"):
        spec_from_dict({**TINY, "dataset": {"name": "synthetic", "seed": -5}})


@pytest.mark.parametrize(
    "dataset, key, fix",
    [
        ({"name": "digits", "limit": 5}, "dataset.limit", "use 10 to 1427"),
        ({"name": "digits", "test_fraction": 0.999}, "dataset.test_fraction", "use e.g. 0.2"),
    ],
)
def test_a_limit_or_test_fraction_that_loses_classes_is_one_line(
    dataset, key, fix, tmp_path, capsys
):
    # digits: 1797 samples of 10 classes; 0.2 held out leaves 1437 training samples, and a
    # stratified subset keeps every class in what it keeps and what it drops: 10..1427
    spec = _spec(tmp_path, {**TINY, "dataset": dataset})
    assert main(["validate", str(spec)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"'{key}'" in line and fix in line


@pytest.mark.parametrize("option", ["--threads", "--num-cpus"])
@pytest.mark.parametrize("value", [0, -1, CPUS + 1, 64 * CPUS])
def test_threads_and_cpus_outside_this_machine_are_refused(option, value, tmp_path, capsys):
    spec = _spec(tmp_path, TINY)
    out = tmp_path / "r"
    args = ["run", str(spec), "--serial", option, str(value), "--output", str(out)]
    assert main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{option} {value}: must be from 1 to {CPUS}" in line
    assert not out.exists()


def test_bench_num_cpus_outside_this_machine_is_refused(tmp_path, capsys):
    args = ["bench", "sklearn", "--num-cpus", "0", "--output", str(tmp_path / "b")]
    assert main(args) == 2
    assert f"--num-cpus 0: must be from 1 to {CPUS}" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "options, words",
    [
        (["--serial", "--executor", "ray"], "--serial and --executor ray"),
        (["--serial", "--executor", "local"], "--serial and --executor local"),
        (["--executor", "local", "--address", "127.0.0.1:1"], "--address needs --executor ray"),
        (["--threads", "1"], "--threads sets torch's threads of --serial; add --serial"),
    ],
)
def test_options_that_contradict_each_other_are_refused(options, words, tmp_path, capsys):
    spec = _spec(tmp_path, TINY)
    assert main(["run", str(spec), *options, "--output", str(tmp_path / "r")]) == 2
    assert words in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content", ["{}", "[]", '{"spec": {"kind": "kfold"}}'])
@pytest.mark.parametrize("command", ["resume", "report"])
def test_a_run_json_that_is_no_run_record_is_one_line(content, command, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(content)
    args = ["run", "--resume", str(run_dir)] if command == "resume" else ["report", str(run_dir)]
    assert main(args) == 2
    assert "is not a raynn run record" in _one_line(capsys.readouterr().err)
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.json"]  # nothing written
    assert (run_dir / "run.json").read_text() == content


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_binary_spec_file_is_one_line(command, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"kind: kfold\n\xff\xfe\x00\x01garbage")
    assert main([command, str(spec)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "is not text" in line and "byte 12" in line


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"raynn {__version__}\n"


@pytest.mark.timeout(300)
def test_debug_shows_the_traceback_and_without_it_one_line(tmp_path):
    spec = _spec(tmp_path, {**TINY, "models": ["nonet"]})
    plain = _cli(["validate", str(spec)], tmp_path)
    debug = _cli(["--debug", "validate", str(spec)], tmp_path)
    assert plain.returncode == 2 and "nonet" in _one_line(plain.stderr)
    assert "Traceback" not in plain.stderr
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("raynn.errors.SpecError: ")


@pytest.mark.timeout(120)
def test_an_unreachable_address_is_one_line(tmp_path):
    spec = _spec(tmp_path, TINY)
    address = f"127.0.0.1:{free_port()}"
    proc = _cli(["run", str(spec), "--address", address, "--output", "r"], tmp_path, 110)
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert f"cannot reach a Ray cluster at {address}" in line and "ray start --head" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.timeout(600)
def test_a_run_from_a_folder_holding_a_raynn_folder_uses_the_local_executor(tmp_path):
    """A folder named raynn where the command runs (a clone's parent, an old copy) does not
    replace the raynn the driver runs in the workers' zygote; without --executor the run
    uses the local executor; report.md shows the machine's and raynn's CPU share."""
    here = tmp_path / "here"
    (here / "raynn").mkdir(parents=True)
    (here / "raynn" / "__init__.py").write_text('raise ImportError("not raynn")\n')
    spec = _spec(tmp_path, TINY)
    proc = _cli(["run", str(spec), "--no-progress", "--output", "runs"], here, 580)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (here / "runs").iterdir()
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["runs"][-1]["executor"] == "local"
    report = (run_dir / "report.md").read_text()
    assert "mean CPU utilisation: machine " in report and "%, raynn " in report


def test_a_zygote_that_cannot_import_says_what(tmp_path):
    zygote = Zygote(preload=["raynn_no_such_module_21"])
    try:
        with pytest.raises(RaynnError) as err:
            zygote.load({"x": 1})
            zygote.fork("tests.helpers:echo_worker", "t")
    finally:
        zygote.close()
    text = str(err.value)
    assert "cannot import raynn_no_such_module_21 (ModuleNotFoundError: " in text
    assert "run again" not in text


def _utilization(run_dir: Path, own: list[float | None]) -> None:
    rows = [
        {"node": "vm", "time": 100.0 + i, "core": i % 2, "percent": 100.0, "own_percent": o}
        for i, o in enumerate(own)
    ]
    write_table(run_dir / "utilization" / "vm.parquet", rows, UTILIZATION_SCHEMA)
    (run_dir / "run.json").write_text(json.dumps({"spec": {"name": "u"}, "runs": []}))


def test_the_report_shows_raynn_s_cpu_share_beside_the_machine_s(tmp_path):
    _utilization(tmp_path / "a", [40.0, 55.4, 50.0, 45.4])  # mean 47.7
    assert utilization_text(tmp_path / "a") == "machine 100.0%, raynn 47.7%"
    _utilization(tmp_path / "b", [None, None])  # not measured: the machine's only
    assert utilization_text(tmp_path / "b") == "machine 100.0%"
    (tmp_path / "c").mkdir()
    assert utilization_text(tmp_path / "c") == "-"


def test_the_sample_that_covers_a_run_s_end_counts(tmp_path):
    """Samples at 100..103 s cover the second before each: a run inside one interval has that
    sample; a run's window takes the samples in it and the first one after its end."""
    rows = [
        {"node": "vm", "time": 100.0 + i, "core": 0, "percent": 10.0 * (i + 1), "own_percent": 1.0}
        for i in range(4)
    ]
    write_table(tmp_path / "utilization" / "vm.parquet", rows, UTILIZATION_SCHEMA)
    (tmp_path / "run.json").write_text(json.dumps({"spec": {"name": "u"}, "runs": []}))
    assert utilization_text(tmp_path, 100.2, 100.4) == "machine 20.0%, raynn 1.0%"
    assert utilization_text(tmp_path, 100.5, 102.5) == "machine 30.0%, raynn 1.0%"  # 101-103
    assert utilization_text(tmp_path, 102.5, 103.5) == "machine 40.0%, raynn 1.0%"
    assert utilization_text(tmp_path, 103.5, 104.0) == "-"


CHILD = textwrap.dedent(
    """
    import os, subprocess, sys, time
    kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(sys.argv[1] + ".tmp", "w") as fh:
        fh.write(f"{os.getpid()} {kid.pid}")
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(600)
    """
)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


BENCH = textwrap.dedent(
    """
    import os, sys
    from raynn.bench.common import run_group
    with open(sys.argv[2], "wb") as log:
        try:
            run_group([sys.executable, "-c", sys.argv[1], sys.argv[3]], log, os.environ, 300)
        except KeyboardInterrupt:
            sys.exit(130)
    """
)


def _signal_state(pid: int) -> str:
    """A process's blocked and ignored signal masks (``/proc``), for a failure's message."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "gone"
    return "; ".join(x for x in lines if x.startswith(("SigBlk", "SigIgn", "SigCgt")))


def _default_sigint() -> None:  # the bench's Ctrl-C as a terminal's, whatever the test runner's
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.timeout(300)
def test_an_interrupted_bench_kills_its_mode_s_whole_process_group(tmp_path):
    """Ctrl-C reaches the bench (its own process: the mode runs in a session of its own, as
    under ``raynn bench``); the bench kills the mode's whole process group, grandchild too."""
    pids = tmp_path / "pids"
    cmd = [sys.executable, "-c", BENCH, CHILD, str(tmp_path / "log"), str(pids)]
    bench = subprocess.Popen(cmd, cwd=REPO, preexec_fn=_default_sigint)
    try:
        assert wait_for(pids.exists, 200), f"the mode never started: {_signal_state(bench.pid)}"
        leader, grandchild = (int(p) for p in pids.read_text().split())
        state = _signal_state(bench.pid)
        bench.send_signal(signal.SIGINT)
        try:
            code = bench.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None  # the Ctrl-C went unanswered
        assert code == 130, f"bench exit {code}; its signals before Ctrl-C: {state}"
        assert wait_for(lambda: _gone(leader) and _gone(grandchild))
    finally:
        bench.kill()
        bench.wait()


@pytest.mark.timeout(120)
def test_a_users_module_that_raises_on_import_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_models.py").write_text("raise ValueError('no GPU here\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = _spec(tmp_path, {**TINY, "models": ["broken_models:factory"]})
    assert main(["validate", str(spec)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "importing module 'broken_models' raised ValueError: no GPU here;" in line
    assert "second line" not in line


@pytest.mark.timeout(120)
def test_output_piped_into_a_reader_that_left_ends_quietly(tmp_path):
    # the reader's end is closed before the command starts: its first write meets EPIPE, as
    # `raynn report RUN | head` does once head has its lines
    read, write = os.pipe()
    os.close(read)
    spec = REPO / "jobs" / "kfold_digits.yaml"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "raynn", "validate", str(spec)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=100,
        )
    finally:
        os.close(write)
    assert done.returncode == 141 and "Traceback" not in done.stderr, done.stderr
