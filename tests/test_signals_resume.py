"""Signals and resume (issue 21, item 5): SIGTERM ends a run as Ctrl-C does; ``--resume``
of a complete run changes nothing, with another spec or a hand-edited run.json refuses;
``raynn report --against`` pairs folds only where both runs made the same.

The SIGTERM tests run ``python -m raynn run`` as a real process whose training step never
returns (``tests.helpers:hangs_once_mlp``), and signal it once that step has begun: the run
cannot have ended first, whatever the load on the machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raynn.cli import main
from raynn.errors import SpecError
from raynn.kfold.report import compare, summarize, wall_seconds
from raynn.kfold.runner import run
from raynn.kfold.tables import JOBS_SCHEMA
from raynn.runs.signals import SIGTERM_EXIT_CODE, Terminated, sigterm_as_interrupt
from raynn.spec import spec_from_dict
from tests.conftest import REPO, make_spec

HOGWILD_DIGITS = REPO / "jobs" / "hogwild_digits.yaml"


def hanging_loader(spec: Any) -> Any:
    """A dataset loader that marks ``spec.root/loading`` and never returns."""
    Path(spec.root, "loading").touch()
    while True:
        time.sleep(60)


def _start(spec_path: Path, *args: str) -> subprocess.Popen:
    """``python -m raynn run SPEC`` in its own session (as ``ray job submit`` starts it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "raynn", "run", str(spec_path), "--no-progress", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for(proc: subprocess.Popen, ready: Any, timeout: float = 240.0) -> None:
    """Wait until ``ready()``; fail with the process's stderr if it exits first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"raynn run exited ({proc.returncode}) early: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"not ready after {timeout:.0f} s")
        time.sleep(0.05)


def _terminate(proc: subprocess.Popen, group: bool) -> tuple[int, str]:
    """SIGTERM to the process group (ray job stop, Slurm) or the driver alone (Kubernetes);
    its exit code and stderr."""
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, err


def _last_attempt(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text())["runs"][-1]


def _running(runs: Path) -> bool:
    dirs = [d for d in runs.glob("*") if (d / "run.json").is_file()]
    return any(_last_attempt(d).get("status") == "running" for d in dirs)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("group", [True, False], ids=["process-group", "driver-only"])
def test_sigterm_ends_a_kfold_run_as_ctrl_c_does(tmp_path, capsys, group):
    marker = tmp_path / "training"
    model = {"name": "tests.helpers:hangs_once_mlp", "args": {"marker": str(marker)}}
    spec = make_spec(
        tmp_path,
        models=[model],
        dataset={"limit": 200},
        training={"epochs": 1},
        scheduling={"probe": False, "cores_per_job": 1, "lease_timeout": 3600},
    )
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec.to_dict()))
    runs = tmp_path / "runs"
    proc = _start(spec_path)  # the local executor: forked workers
    _wait_for(proc, lambda: marker.exists() and _running(runs))  # a job is mid-step
    code, err = _terminate(proc, group)
    (run_dir,) = runs.iterdir()
    assert code == SIGTERM_EXIT_CODE == 143, err
    assert f"raynn: terminated (SIGTERM); finish with: raynn run --resume {run_dir}" in err
    attempt = _last_attempt(run_dir)
    assert attempt["status"] == "interrupted" and attempt["signal"] == "SIGTERM"
    assert attempt["end"] >= attempt["start"]
    assert not (run_dir / "run.lock").exists()  # the driver let go of its run directory
    assert main(["report", str(run_dir), "--no-html"]) == 0
    out = capsys.readouterr().out
    assert "status: interrupted (SIGTERM)" in out and "status: running" not in out


@pytest.mark.timeout(300)
def test_sigterm_ends_a_serial_hogwild_run_as_ctrl_c_does(tmp_path):
    import yaml

    marker = tmp_path / "training"
    raw = yaml.safe_load(HOGWILD_DIGITS.read_text())
    raw["model"] = {"name": "tests.helpers:hangs_once_mlp", "args": {"marker": str(marker)}}
    raw["training"]["epochs"] = 1
    raw["output"] = {"dir": str(tmp_path / "runs")}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(raw))
    runs = tmp_path / "runs"
    proc = _start(spec_path, "--serial", "--threads", "1")
    _wait_for(proc, lambda: marker.exists() and _running(runs))
    code, err = _terminate(proc, group=True)
    (run_dir,) = runs.iterdir()
    assert code == 143 and f"finish with: raynn run --resume {run_dir}" in err, err
    attempt = _last_attempt(run_dir)
    assert attempt["status"] == "interrupted" and attempt["signal"] == "SIGTERM"


@pytest.mark.timeout(300)
def test_sigterm_before_a_run_directory_says_none_was_made(tmp_path):
    loader = {"name": "tests.test_signals_resume:hanging_loader", "root": str(tmp_path)}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(make_spec(tmp_path, dataset=loader).to_dict()))
    proc = _start(spec_path)
    _wait_for(proc, (tmp_path / "loading").exists)
    code, err = _terminate(proc, group=False)
    assert code == 143 and "--resume" not in err, err
    assert "raynn: terminated (SIGTERM) before a run directory was made; nothing to resume" in err
    assert not list((tmp_path / "runs").glob("*"))


@pytest.mark.timeout(60)
def test_sigterm_writes_the_interrupted_attempt_before_any_cleanup(tmp_path):
    """A cleanup that never ends (Ray calls to an embedded cluster that the same SIGTERM
    stopped) or is cut short (ray job stop's SIGKILL 3 s later) finds run.json saying so."""
    from raynn.runs.record import RunRecord

    record = RunRecord.create(tmp_path, make_spec(tmp_path))
    before = signal.getsignal(signal.SIGTERM)  # an earlier test's ray.init may have set one
    seen: dict[str, Any] = {}
    with pytest.raises(KeyboardInterrupt), record.attempt("serial"):
        assert callable(signal.getsignal(signal.SIGTERM))  # the attempt's: safe to send
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(30)  # the handler raises here at the latest
            pytest.fail("SIGTERM raised nothing")
        finally:  # the cleanup
            seen = json.loads((record.run_dir / "run.json").read_text())["runs"][-1]
    assert seen["status"] == "interrupted" and seen["signal"] == "SIGTERM" and "end" in seen
    assert signal.getsignal(signal.SIGTERM) == (before or signal.SIG_DFL)  # given back


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_an_embedded_ray_keeps_the_sigterm_handler_of_a_run():
    """ray.init sets a SIGTERM handler of its own (sys.exit): a run's must stay."""
    import ray

    from raynn.placement import session

    if ray.is_initialized():
        ray.shutdown()
    with sigterm_as_interrupt():
        ours = signal.getsignal(signal.SIGTERM)
        started = session.connect("local", 1)
        try:
            assert started and signal.getsignal(signal.SIGTERM) is ours
            with pytest.raises(Terminated):
                ours(signal.SIGTERM, None)
        finally:
            session.shutdown_if_started(started)
    assert signal.getsignal(signal.SIGTERM) is not ours  # given back after the run


# -- resume ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def complete_run(tmp_path_factory) -> tuple[Any, Path]:
    """A finished tiny K-fold run (serial): its spec and run directory, not to be changed."""
    root = tmp_path_factory.mktemp("complete")
    spec = make_spec(root, models=["mlp"], dataset={"limit": 200}, training={"epochs": 1})
    result = run(spec, executor="serial", threads=1, progress=False)
    assert result.ok
    return spec, result.run_dir


@pytest.fixture
def done(complete_run, tmp_path) -> tuple[Any, Path]:
    """A copy of the finished run, to resume."""
    spec, run_dir = complete_run
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    return spec, copy


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    files = sorted(p for p in run_dir.rglob("*") if p.is_file())
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in files}


def _resume(run_dir: Path, *spec: str) -> int:
    return main(["run", *spec, "--resume", str(run_dir), "--serial", "--no-progress"])


@pytest.mark.timeout(300)
def test_resuming_a_complete_run_changes_nothing(done, capsys):
    spec, run_dir = done
    before = _snapshot(run_dir)
    assert len(json.loads(before["run.json"])["runs"]) == 1
    assert _resume(run_dir) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "complete" in line]
    assert lines == [
        f"raynn: {run_dir} is complete: every job has its final row; nothing to resume, "
        "nothing changed"
    ]
    assert f"results: {run_dir}" in captured.out
    assert _snapshot(run_dir) == before  # run.json, report.md, every table: byte for byte


@pytest.mark.timeout(300)
def test_resuming_a_complete_hogwild_run_changes_nothing(tmp_path, capsys):
    import yaml

    from raynn.hogwild.runner import run as hogwild_run

    raw = yaml.safe_load(HOGWILD_DIGITS.read_text())
    raw["training"].update(epochs=1, eval_every_seconds=0.5)
    raw["dataset"]["limit"] = 200
    raw["output"] = {"dir": str(tmp_path / "runs")}
    result = hogwild_run(spec_from_dict(raw), executor="serial", threads=1, progress=False)
    assert result.ok
    before = _snapshot(result.run_dir)
    assert _resume(result.run_dir) == 0
    assert "is complete: its last attempt completed" in capsys.readouterr().err
    assert _snapshot(result.run_dir) == before


def test_an_empty_attempt_says_nothing_of_the_runs_time(done):
    """A run resumed once complete by an older raynn has a trailing attempt with no jobs:
    the report's wall time and workers, and --against's speed-up, are the last attempt's
    that ran jobs."""
    _, run_dir = done
    meta = json.loads((run_dir / "run.json").read_text())
    first = meta["runs"][0]
    empty = {"executor": "serial", "jobs": 0, "workers": 0, "status": "completed"}
    wall = first["wall_seconds"] + 1000.0  # no rounding makes it read as the first's
    meta["runs"].append({**empty, "start": 1.0, "end": 1.0 + wall, "wall_seconds": wall})
    (run_dir / "run.json").write_text(json.dumps(meta))
    text = summarize(run_dir)
    assert f"- wall time: {first['wall_seconds']:.1f} s (" in text
    assert f"- workers: {first['workers']} x " in text
    assert wall_seconds(run_dir) == first["wall_seconds"]


@pytest.mark.timeout(300)
def test_a_spec_that_differs_from_the_runs_is_refused_naming_the_keys(done, tmp_path, capsys):
    spec, run_dir = done
    before = _snapshot(run_dir)
    raw = spec.to_dict()
    raw["optimizer"]["lr"] = 0.1
    raw["training"]["epochs"] = 7
    raw["output"]["dir"] = str(tmp_path / "elsewhere")  # where new runs go: free to differ
    other = tmp_path / "other.json"
    other.write_text(json.dumps(raw))
    assert _resume(run_dir, str(other)) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"raynn: error: cannot resume {run_dir} with this spec")
    assert "at optimizer.lr, training.epochs;" in line
    with pytest.raises(SpecError, match="at optimizer.lr, training.epochs;"):
        run(spec_from_dict(raw), resume=run_dir)  # the Python API: the same refusal
    assert _snapshot(run_dir) == before
    same = tmp_path / "same.json"
    same.write_text(json.dumps(spec.to_dict()))
    assert _resume(run_dir, str(same)) == 0  # the run's own spec: accepted (and complete)
    assert _snapshot(run_dir) == before


@pytest.mark.timeout(300)
def test_a_run_json_edited_by_hand_is_refused(done, capsys):
    _, run_dir = done
    path = run_dir / "run.json"
    meta = json.loads(path.read_text())
    canonical = json.dumps(meta["spec"], sort_keys=True, separators=(",", ":"))
    assert meta["spec_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    meta["spec"]["optimizer"]["lr"] = 0.5
    path.write_text(json.dumps(meta, indent=2))
    edited = path.read_bytes()
    assert _resume(run_dir) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"raynn: error: {path} was edited by hand: its spec no longer matches its digest; "
        "restore it or start a new run"
    ]
    assert path.read_bytes() == edited
    del meta["spec_sha256"]  # a digest removed is an edit too
    path.write_text(json.dumps(meta, indent=2))
    assert _resume(run_dir) == 2 and "edited by hand" in capsys.readouterr().err
    meta["schema_version"] = 4  # a run.json from before the digest: resumes as it always did
    path.write_text(json.dumps(meta, indent=2))
    assert _resume(run_dir) == 0


# -- --against ---------------------------------------------------------------------------------
ACC = {  # (run, fold) -> val accuracy of the one configuration, mlp/cosine
    ("a", 0): 0.80, ("a", 1): 0.84, ("a", 2): 0.90,
    ("b", 0): 0.70, ("b", 1): 0.78, ("b", 2): 0.75,
}  # fmt: skip


def _hand_run(path: Path, which: str, raw_spec: dict[str, Any], wall: float) -> Path:
    """A run directory written by hand: run.json with ``raw_spec``, three ok folds."""
    rows = []
    for fold in range(3):
        row = {f.name: None for f in JOBS_SCHEMA}
        row.update(
            job_id=f"mlp-cosine-f{fold}", model="mlp", scheduler="cosine", config="mlp/cosine",
            fold=fold, seed=fold, status="ok", attempt=1, epochs=1, resumed_from_epoch=0,
            val_accuracy=ACC[which, fold], test_accuracy=ACC[which, fold], val_loss=1.0,
            test_loss=1.0, train_seconds=1.0, eval_seconds=0.0, queue_wait_seconds=0.0,
            start_time=100.0, end_time=101.0, node="n", worker="0", cores=[0], threads=1,
            params=10, affinity=[0], thread_pools=[], per_class_accuracy=[],
        )  # fmt: skip
        rows.append(row)
    (path / "jobs").mkdir(parents=True)
    table = pa.Table.from_pandas(pd.DataFrame(rows), JOBS_SCHEMA, preserve_index=False)
    pq.write_table(table, path / "jobs" / "all.parquet")
    runs = [{"executor": "serial", "status": "completed", "jobs": 3, "wall_seconds": wall}]
    (path / "run.json").write_text(json.dumps({"spec": raw_spec, "runs": runs}))
    return path


def _spec_dict(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return make_spec(tmp_path, **{"models": ["mlp"], "folds": 3, **overrides}).to_dict()


def _mean_cell(values: list[float]) -> str:
    from scipy import stats

    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(3)
    return f"{statistics.mean(values):.4f} ± {half:.4f}"


@pytest.mark.parametrize(
    ("change", "differ", "speed_up"),
    [
        ({"seed": 9}, "seed", True),  # the same work, other folds
        ({"dataset": {"limit": 300}}, "dataset.limit", False),
        ({"folds": 4}, "folds", False),
    ],
)
def test_against_runs_with_other_folds_compares_unpaired_means(tmp_path, change, differ, speed_up):
    a = _hand_run(tmp_path / "a", "a", _spec_dict(tmp_path), wall=10.0)
    b = _hand_run(tmp_path / "b", "b", _spec_dict(tmp_path, **change), wall=30.0)
    text = compare(a, b)
    assert f"- the runs differ in {differ}: their folds hold different samples, so accuracy " \
        "cannot be paired by fold and no test is made" in text  # fmt: skip
    assert "paired t-test" not in text and "| p |" not in text
    va, vb = ([ACC[w, f] for f in range(3)] for w in "ab")
    row = f"| mlp | cosine | 3 | {_mean_cell(va)} | 3 | {_mean_cell(vb)} | "
    assert row + f"{statistics.mean(va) - statistics.mean(vb):+.4f} |" in text
    assert ("- speed-up: B 30.0 s / A 10.0 s = 3.00x" in text) is speed_up
    assert ("(not a speed-up: other data or folds)" in text) is not speed_up


def test_against_runs_of_one_spec_still_pairs_their_folds(tmp_path):
    raw = _spec_dict(tmp_path)
    b_raw = json.loads(json.dumps(raw))
    b_raw["dataset"]["root"] = "/elsewhere"  # where the data was read from: the same data
    del b_raw["dataset"]["test_fraction"]  # a default left out: the same spec
    a = _hand_run(tmp_path / "a", "a", raw, wall=10.0)
    b = _hand_run(tmp_path / "b", "b", b_raw, wall=30.0)
    text = compare(a, b)
    assert "differ in" not in text and "paired t-test" in text and "| p |" in text
    assert "- speed-up: B 30.0 s / A 10.0 s = 3.00x" in text
