"""Nothing lost, nothing hidden: file names, the run lock, damaged files, durable writes,
output paths and hostile specs (issue 12)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pandas as pd
import pytest

from raynn.cli import main
from raynn.errors import OutputError, SpecError
from raynn.kfold.collector import ResultsCollector
from raynn.kfold.executors.serial import SerialExecutor
from raynn.kfold.rows import JobResult
from raynn.kfold.runner import prepare, run
from raynn.runs.files import atomic_write, file_stem, write_bytes
from raynn.runs.results import RunLock, output_root, read_table
from raynn.spec import load_spec
from tests.conftest import make_spec


# -- file names -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "labels",
    [["m 1", "m_1"], ["m/1", "m_1"], ["_hidden", ".dot"], ["../../x", "x"]],
    ids=["space-vs-underscore", "slash", "leading-underscore-and-dot", "dot-dot-slash"],
)
def test_every_job_is_read_whatever_its_label(tmp_path, labels):
    models = [{"name": "mlp", "label": label} for label in labels]
    result = run(
        make_spec(tmp_path, models=models, training={"epochs": 1}),
        executor=SerialExecutor(threads=1),
        progress=False,
    )
    expected = {f"{label}-cosine-f{k}" for label in labels for k in (0, 1)}
    assert set(result.jobs["job_id"]) == expected
    # what a user reads with pandas, and what --resume and report read, see all four
    assert set(pd.read_parquet(result.run_dir / "jobs")["job_id"]) == expected
    assert pd.read_parquet(result.run_dir / "epochs")["job_id"].nunique() == 4
    for table in ("jobs", "epochs"):  # one file at the run's end, none hidden from pyarrow
        names = [p.name for p in (result.run_dir / table).iterdir()]
        assert len(names) == 1 and names[0][0] not in "._"
    assert main(["run", "--resume", str(result.run_dir), "--serial", "--no-progress"]) == 0


def test_file_stems_differ_for_keys_that_read_the_same():
    assert file_stem("m 1") != file_stem("m_1")
    assert file_stem("a") == file_stem("a")
    assert file_stem("..") and file_stem("..")[0] not in "._"


# -- an ok row is final ---------------------------------------------------------------------------
def test_a_failed_result_after_an_ok_row_leaves_the_ok_row(tmp_path):
    spec = make_spec(tmp_path, models=["mlp"], training={"epochs": 1})
    plan = prepare(spec)
    job = plan.jobs[0]
    collector = ResultsCollector(tmp_path / "run")
    from raynn.kfold.train import train_job

    ok = train_job(job, plan.data, threads=1)
    collector.write_job(ok)
    collector.write_job(JobResult.failed(job, "RuntimeError: late", attempt=2))
    jobs, epochs = read_table(tmp_path / "run", "jobs"), read_table(tmp_path / "run", "epochs")
    assert jobs["status"].tolist() == ["ok"] and len(epochs) == 1
    collector.write_job(ok)  # writing the same ok result again is harmless
    assert read_table(tmp_path / "run", "jobs")["status"].tolist() == ["ok"]


# -- the run lock ---------------------------------------------------------------------------------
def test_the_run_lock_is_held_by_the_kernel_not_by_the_file_text(tmp_path):
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    first.acquire()
    with pytest.raises(OutputError, match="in use by another raynn driver"):
        second.acquire()
    first.release()
    second.acquire()  # free again at once
    second.release()
    (tmp_path / "run.lock").write_text("")  # left between create and write by a dead driver
    with RunLock(tmp_path):
        pass
    (tmp_path / "run.lock").write_text(f'{{"pid": {os.getpid()}, "host": "{os.uname()[1]}"}}')
    with RunLock(tmp_path):  # text naming a live process, but nobody holds the lock
        pass


def test_a_live_run_directory_refuses_a_second_driver(tmp_path, capsys):
    first = run(make_spec(tmp_path, models=["mlp"]), executor="serial", progress=False)
    with RunLock(first.run_dir):
        assert main(["run", "--resume", str(first.run_dir), "--serial", "--no-progress"]) == 2
        assert "in use" in capsys.readouterr().err
    assert main(["run", "--resume", str(first.run_dir), "--serial", "--no-progress"]) == 0
    assert not (first.run_dir / "run.lock").exists()


def test_taking_the_lock_sweeps_a_killed_writers_temporary_files(tmp_path):
    (tmp_path / "jobs").mkdir()
    leftover = tmp_path / "jobs" / ".x.parquet.abc.tmp"
    leftover.write_bytes(b"half")
    with RunLock(tmp_path):
        assert not leftover.exists()


# -- damaged files --------------------------------------------------------------------------------
def test_a_damaged_table_file_is_named_and_resume_reruns_its_job(tmp_path, capsys):
    result = run(make_spec(tmp_path, models=["mlp"]), executor="serial", progress=False)
    victim = sorted((result.run_dir / "jobs").glob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:40])  # truncated
    assert main(["report", str(result.run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and victim.name in err and "--resume" in err
    assert main(["run", "--resume", str(result.run_dir), "--serial", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "damaged" in captured.err
    jobs = read_table(result.run_dir, "jobs")
    assert len(jobs) == 2 and (jobs["status"] == "ok").all()
    assert (result.run_dir / "damaged" / f"jobs-{victim.name}").exists()
    assert main(["report", str(result.run_dir), "--no-html"]) == 0


def test_damaged_epochs_make_the_job_run_again(tmp_path):
    result = run(make_spec(tmp_path, models=["mlp"]), executor="serial", progress=False)
    victim = sorted((result.run_dir / "epochs").glob("*.parquet"))[0]
    victim.write_bytes(b"garbage")
    again = run(resume=result.run_dir, executor="serial", progress=False)
    assert again.ok and len(read_table(result.run_dir, "epochs")) == 2 * 3
    assert len(again.jobs) == 2


# -- durable, ordinary files ----------------------------------------------------------------------
def test_files_get_the_mode_the_umask_gives(tmp_path):
    path = tmp_path / "a" / "f.bin"
    write_bytes(path, b"x")
    mode = stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    assert not list(path.parent.glob(".*.tmp"))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.bin"
    write_bytes(path, b"old")

    def boom(fh):
        fh.write(b"new, half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device"):
        atomic_write(path, boom)
    assert path.read_bytes() == b"old" and not list(tmp_path.glob(".*.tmp"))


# -- output paths ---------------------------------------------------------------------------------
def test_a_relative_output_is_absolute_before_any_worker_sees_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert output_root("runs") == tmp_path / "runs"
    assert output_root(tmp_path / "x") == tmp_path / "x"


def test_under_a_ray_job_a_relative_output_leaves_rays_temporary_copy(
    tmp_path, monkeypatch, capsys
):
    copy = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_1"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("RAYNN_RESULTS_HOME", str(tmp_path / "home"))
    assert output_root("runs") == tmp_path / "home" / "runs"
    assert str(tmp_path / "home" / "runs") in capsys.readouterr().err
    monkeypatch.delenv("RAYNN_RESULTS_HOME")
    assert output_root("runs") == Path.home() / "runs"


class _DroppingExecutor(SerialExecutor):
    """Trains every job but one, as if its row had been written somewhere else."""

    def execute(self, jobs, data, run_dir, **kwargs):
        return super().execute(jobs[1:], data, run_dir, **kwargs)


def test_a_run_whose_tables_lack_a_job_is_never_completed(tmp_path):
    result = run(
        make_spec(tmp_path, models=["mlp"]), executor=_DroppingExecutor(threads=1), progress=False
    )
    assert result.status == "incomplete" and len(result.jobs) == 1
    import json

    attempt = json.loads((result.run_dir / "run.json").read_text())["runs"][-1]
    assert attempt["status"] == "incomplete" and "--resume" in attempt["error"]
    assert run(resume=result.run_dir, executor="serial", progress=False).ok


def test_an_unwritable_output_is_refused_before_the_data_loads(tmp_path, monkeypatch):
    import raynn.kfold.runner

    def no_data(*args, **kwargs):
        raise AssertionError("the data loaded before the output was checked")

    monkeypatch.setattr(raynn.kfold.runner, "load_data", no_data)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="--output"):
        run(make_spec(tmp_path), executor="local", output=str(blocker / "r"), progress=False)


# -- hostile specs --------------------------------------------------------------------------------
ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
folds: [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    started = time.process_time()
    with pytest.raises(SpecError, match="aliases") as err:
        load_spec(path)
    assert time.process_time() - started < 5  # 9**9 values if anything expanded them
    assert len(str(err.value)) < 300


def test_an_alias_bomb_under_the_node_budget_gets_a_short_message(tmp_path):
    path = tmp_path / "small_bomb.yaml"
    path.write_text(
        "models: [mlp]\n"
        'folds: [&a ["x","x","x","x","x","x","x","x","x","x"], '
        "&b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], [*b,*b,*b]]\n"
    )
    with pytest.raises(SpecError, match="'folds': must be an integer") as err:
        load_spec(path)
    assert len(str(err.value)) < 300


def test_a_huge_spec_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("name: x\n# " + "y" * (2 << 20) + "\n")
    with pytest.raises(SpecError, match="bytes"):
        load_spec(path)


def test_a_spec_without_models_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("kind: kfold\nname: x\ndataset: {name: digits}\n")
    with pytest.raises(SpecError, match="'models': is missing.*valid: .*lenet"):
        load_spec(path)


# -- wrong data and models from user code ---------------------------------------------------------
def _arrays(n=40, classes=4):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(n, 1, 8, 8), dtype=np.uint8)
    return x, (np.arange(n) % classes).astype(np.int64)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x, y: (x.reshape(len(x), -1), y, 4), "shape (40, 64); return a 4-D uint8 array"),
        (lambda x, y: (x, y - 1, 4), "labels span -1..2 but num_classes is 4"),
        (lambda x, y: (x, y, 3), "labels span 0..3 but num_classes is 3"),
        (lambda x, y: (x, y[:-1], 4), "40 images but 39 labels"),
        (lambda x, y: (x, y, 5), "class 4 of 5 has no training samples"),
    ],
    ids=["2-d-x", "negative-labels", "labels-above-classes", "lengths", "empty-class"],
)
def test_wrong_arrays_from_a_loader_get_one_line(change, message, tmp_path, capsys, monkeypatch):
    from raynn.core.data import ArrayDataset
    from raynn.core.registry import DATASETS

    def loader(spec):
        x, y, classes = change(*_arrays())
        return ArrayDataset("mine", x, y, None, None, num_classes=classes)

    DATASETS.names()  # load the built-ins first
    monkeypatch.setitem(DATASETS._entries, "mine", loader)
    spec = tmp_path / "s.yaml"
    spec.write_text("models: [mlp]\nfolds: 2\ndataset: {name: mine}\n")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_a_model_that_cannot_be_built_names_its_key(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("models: [{name: mlp, args: {hidden: 32}}]\ndataset: {name: digits}\n")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'models' (mlp)" in err and "hidden=32" in err and "TypeError" in err


def test_a_factory_that_returns_no_module_is_refused(tmp_path):
    from raynn.core.model_builder import build_model
    from raynn.spec import Component

    with pytest.raises(SpecError, match="returned dict, not a torch.nn.Module"):
        build_model(Component("x", factory=lambda shape, classes: {}), (1, 8, 8), 10)


# -- HOGWILD --------------------------------------------------------------------------------------
def _hogwild_spec(tmp_path, epochs=2000):
    spec = tmp_path / "hw.yaml"
    spec.write_text(
        "kind: hogwild\nname: hw\nmodel: mlp\ndataset: {name: digits}\n"
        f"training: {{epochs: {epochs}, batch_size: 32, eval_every_seconds: 0.2}}\n"
        f"output: {{dir: {tmp_path / 'runs'}}}\n"
    )
    return spec


def test_a_killed_hogwild_driver_keeps_its_eval_rows_and_frees_its_lock(tmp_path):
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raynn",
            "run",
            str(_hogwild_spec(tmp_path)),
            "--serial",
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        part = None
        while part is None and time.monotonic() < deadline and proc.poll() is None:
            found = list((tmp_path / "runs").glob("*/eval/part-0.parquet"))
            part = found[0] if found else None
            time.sleep(0.1)
        assert part is not None, "no eval rows reached the disk while the run went on"
        run_dir = part.parents[1]
        with pytest.raises(OutputError, match="in use"):  # the live driver holds its lock
            RunLock(run_dir).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(pd.read_parquet(run_dir / "eval")) >= 1
    with RunLock(run_dir):  # the kernel let go of the dead driver's lock
        pass


def test_stale_segments_are_swept_and_live_ones_kept():
    import numpy as np

    from raynn.hogwild.shared_params import (
        SharedParams,
        create_detached,
        list_segments,
        sweep_stale_segments,
        unlink_segment,
    )

    stale = create_detached(f"raynn_hw_test{os.getpid()}_stale", np.zeros(4, np.float32), 1)
    live = SharedParams.create(f"raynn_hw_test{os.getpid()}_live", np.zeros(4, np.float32), 1)
    fresh = create_detached(f"raynn_hw_test{os.getpid()}_fresh", np.zeros(4, np.float32), 1)
    try:
        old = time.time() - 3600
        for name in (stale, live.name):
            os.utime(f"/dev/shm/{name}", (old, old))
        removed = sweep_stale_segments(prefix=f"raynn_hw_test{os.getpid()}")
        assert removed == [stale]  # the mapped one and the just-made one stay
        assert set(list_segments(f"raynn_hw_test{os.getpid()}")) == {live.name, fresh}
    finally:
        live.close()
        for name in (stale, live.name, fresh):
            unlink_segment(name)
