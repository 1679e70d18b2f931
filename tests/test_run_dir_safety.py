"""A run directory is never a way to write elsewhere; long and odd names; durable writes
(issue 21, items 1, 4 and 12)."""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from raynn import load_model
from raynn.cli import main
from raynn.errors import OutputError, SpecError
from raynn.kfold.runner import run
from raynn.runs import results
from raynn.runs.files import (
    CheckpointDir,
    atomic_write,
    read_bytes,
    sweep_temp_files,
    write_bytes,
    write_json,
)
from raynn.runs.results import RunLock, create_run_dir, read_table
from raynn.spec import spec_from_dict
from tests.conftest import TINY, make_spec

RESUME = ["run", "--serial", "--no-progress", "--resume"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) and its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One small finished K-fold run (2 jobs, their models kept); tests work on copies."""
    tmp = tmp_path_factory.mktemp("finished")
    spec = make_spec(tmp, models=["mlp"], training={"epochs": 1}, output={"keep_models": "all"})
    return run(spec, executor="serial", progress=False).run_dir


@pytest.fixture
def run_dir(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / finished.name, symlinks=True))


@pytest.fixture
def victim(tmp_path) -> Path:
    """A folder outside the run directory: a file, and a temporary name a sweep would take."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "precious.txt").write_text("precious")
    (folder / ".x.tmp").write_text("not raynn's")
    return folder


# -- the attacks of the issue ---------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_a_lock_linked_to_another_file_leaves_that_file_alone(run_dir, victim, capsys):
    target = victim / "precious.txt"
    (run_dir / "run.lock").unlink(missing_ok=True)
    (run_dir / "run.lock").symlink_to(target)
    assert main([*RESUME, str(run_dir)]) == 2
    err = _one_line(capsys)
    assert "symlink run.lock" in err and "replace it with a real file" in err
    assert target.read_text() == "precious"


@pytest.mark.timeout(300)
def test_a_lock_linked_after_the_check_is_still_not_followed(run_dir, victim, monkeypatch):
    target = victim / "precious.txt"
    (run_dir / "run.lock").symlink_to(target)
    monkeypatch.setattr(results, "check_no_links", lambda run_dir: None)  # a link swapped in
    with pytest.raises(OutputError, match="symlink run.lock"):
        RunLock(run_dir).acquire()
    assert target.read_text() == "precious" and (run_dir / "run.lock").is_symlink()


@pytest.mark.timeout(300)
def test_a_linked_jobs_folder_is_refused_and_its_target_untouched(run_dir, victim, capsys):
    shutil.rmtree(run_dir / "jobs")
    (run_dir / "jobs").symlink_to(victim, target_is_directory=True)
    before = _snapshot(victim)
    assert main([*RESUME, str(run_dir)]) == 2
    assert "symlink jobs ->" in _one_line(capsys)
    assert main(["report", str(run_dir), "--no-html"]) == 2
    assert "symlink jobs ->" in _one_line(capsys)
    # each layer on its own, as if a link were swapped in after the check
    assert sweep_temp_files(run_dir) == 0
    with pytest.raises(OutputError, match="is a symlink"):
        write_bytes(run_dir / "jobs" / "x.parquet", b"rows")
    assert _snapshot(victim) == before


@pytest.mark.timeout(300)
@pytest.mark.parametrize("link", ["run.json", "report.md", "epochs/first", "models/first"])
def test_a_link_anywhere_in_a_run_directory_is_refused(run_dir, victim, link, capsys):
    folder, _, name = link.rpartition("/")
    path = run_dir / link
    if name == "first":
        path = sorted((run_dir / folder).iterdir())[0]
    path.unlink()
    path.symlink_to(victim / "precious.txt")
    rel = str(path.relative_to(run_dir))
    assert main([*RESUME, str(run_dir)]) == 2
    assert f"symlink {rel} ->" in _one_line(capsys)
    assert main(["report", str(run_dir), "--no-html"]) == 2
    assert f"symlink {rel} ->" in _one_line(capsys)
    with pytest.raises(OutputError, match="does not follow links"):
        load_model(run_dir)
    assert (victim / "precious.txt").read_text() == "precious"


@pytest.mark.timeout(300)
def test_a_run_directory_that_is_a_link_names_the_real_folder(run_dir, tmp_path, capsys):
    link = tmp_path / "latest"
    link.symlink_to(run_dir, target_is_directory=True)
    assert main(["report", str(link), "--no-html"]) == 2
    assert f"pass the real folder ({run_dir})" in _one_line(capsys)
    assert main(["report", str(run_dir), "--no-html"]) == 0


# -- each layer: writes, reads, sweeps ------------------------------------------------------------
def test_a_write_replaces_a_link_at_its_name_and_never_follows_it(tmp_path, victim):
    path = tmp_path / "run" / "report.md"
    path.parent.mkdir()
    path.symlink_to(victim / "precious.txt")
    write_bytes(path, b"new")
    assert not path.is_symlink() and path.read_bytes() == b"new"
    assert (victim / "precious.txt").read_text() == "precious"
    path.unlink()
    path.symlink_to(victim / "precious.txt")
    with pytest.raises(OSError) as info:
        read_bytes(path)
    assert info.value.errno == errno.ELOOP


def test_a_folder_the_user_named_may_be_a_link_outside_run_directories(tmp_path, victim):
    (tmp_path / "results").symlink_to(victim, target_is_directory=True)
    write_json(tmp_path / "results" / "test_results.json", {"a": 1}, follow_links=True)
    assert (victim / "test_results.json").exists()
    with pytest.raises(OutputError, match="is a symlink"):
        write_json(tmp_path / "results" / "other.json", {"a": 1})


def test_sweeps_never_follow_links(tmp_path, victim):
    run_dir = tmp_path / "run"
    (run_dir / "jobs").mkdir(parents=True)
    own = [run_dir / "jobs" / ".a.parquet.1234.tmp", run_dir / ".run.json.5678.tmp"]
    for p in own:
        p.write_bytes(b"half")
    (run_dir / "linked").symlink_to(victim, target_is_directory=True)
    (run_dir / "jobs" / ".evil.tmp").symlink_to(victim / ".x.tmp")  # only the link goes
    before = _snapshot(victim)
    assert sweep_temp_files(run_dir) == 3
    assert not any(p.exists() for p in own) and not (run_dir / "jobs" / ".evil.tmp").is_symlink()
    assert _snapshot(victim) == before


# -- durable writes (item 12): the file and its folder are both fsync'ed ---------------------------
def test_a_written_file_and_its_folder_are_fsynced(tmp_path, monkeypatch):
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.append((st.st_dev, st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = tmp_path / "run" / "jobs" / "a.parquet"
    atomic_write(path, lambda fh: fh.write(b"rows"))
    file_st, dir_st = os.stat(path), os.stat(path.parent)
    assert (file_st.st_dev, file_st.st_ino) in synced  # the file's data
    assert (dir_st.st_dev, dir_st.st_ino) in synced  # its new name


# -- long and odd names (item 4) ------------------------------------------------------------------
@pytest.mark.timeout(600)
def test_a_300_character_model_label_runs_resumes_and_loads(tmp_path):
    label = "m" * 300
    spec = make_spec(
        tmp_path,
        models=[{"name": "mlp", "label": label}],
        training={"epochs": 1},
        output={"keep_models": "all"},
    )
    first = run(spec, executor="serial", progress=False)
    assert first.ok and set(first.jobs["job_id"]) == {f"{label}-cosine-f0", f"{label}-cosine-f1"}
    lost = sorted((first.run_dir / "jobs").iterdir())[0]
    lost.unlink()  # so the resume trains and writes one job again
    assert main([*RESUME, str(first.run_dir)]) == 0
    jobs = read_table(first.run_dir, "jobs")
    assert len(jobs) == 2 and (jobs["status"] == "ok").all()
    assert load_model(first.run_dir, f"{label}-cosine-f0").info["model"]["label"] == label


def test_a_checkpoint_of_a_long_job_id_saves_loads_and_drops(tmp_path):
    store, job_id = CheckpointDir(tmp_path), "m" * 300 + "-cosine-f0"
    assert store.load_checkpoint(job_id) is None
    store.save_checkpoint(job_id, b"state")
    assert store.load_checkpoint(job_id) == b"state"
    store.drop(job_id)
    assert store.load_checkpoint(job_id) is None and not list(store.root.iterdir())


def _spec_file(tmp_path: Path, name: str) -> Path:
    raw = copy.deepcopy(TINY)
    raw["name"], raw["output"] = name, {"dir": str(tmp_path / "runs")}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "name, fix",
    [
        ("x" * 300, "shorten it to at most 200 characters"),
        ("..", "start it with a letter or digit"),
        (".", "start it with a letter or digit"),
        (".hidden", "start it with a letter or digit"),
        ("a/b", "drop the slashes"),
        ("..\\up", "drop the slashes"),
    ],
    ids=["300-chars", "dot-dot", "dot", "leading-dot", "slash", "backslash"],
)
def test_a_run_name_that_is_no_plain_folder_name_is_refused(tmp_path, capsys, name, fix):
    spec = _spec_file(tmp_path, name)
    for command in (["validate", str(spec)], ["run", str(spec), "--serial", "--no-progress"]):
        assert main(command) == 2
        err = _one_line(capsys)
        assert "spec key 'name'" in err and fix in err and "--output" not in err
    assert not (tmp_path / "runs").exists()


def test_a_200_character_run_name_makes_its_run_directory(tmp_path, capsys):
    assert main(["validate", str(_spec_file(tmp_path, "x" * 200))]) == 0
    path = create_run_dir(tmp_path, "x" * 200)
    assert path.is_dir() and path.name.startswith("x" * 200 + "-")


@pytest.mark.parametrize("name", ["..", "a/b", "é" * 101])
def test_a_hogwild_run_name_is_held_to_the_same_rule(name):
    assert spec_from_dict({"kind": "hogwild", "name": "é" * 100}).name == "é" * 100  # 200 bytes
    with pytest.raises(SpecError, match="spec key 'name'"):
        spec_from_dict({"kind": "hogwild", "name": name})


@pytest.mark.timeout(300)
def test_a_killed_driver_s_run_is_not_reported_as_running(run_dir, capsys):
    """SIGKILL leaves an attempt ``running`` in run.json; only a held run.lock makes it so."""
    meta = json.loads((run_dir / "run.json").read_text())
    meta["runs"][-1]["status"] = "running"  # what a SIGKILLed driver leaves (the spec is kept)
    (run_dir / "run.json").write_text(json.dumps(meta))
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "status: ended without a word" in out
    assert f"raynn run --resume {run_dir}" in out
    with RunLock(run_dir):  # a live driver (this test) holds the lock
        assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "status: running;" in out and "without a word" not in out
