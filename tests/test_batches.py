"""The K-fold tables as few files (raynn.runs.batches): a journal per write, Parquet batches,
one file at the end; each job's rows from its newest write, whatever a crash left."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pyarrow.parquet as pq
import pytest

from raynn.kfold.collector import ResultsCollector
from raynn.kfold.rows import EpochRecord, JobResult
from raynn.kfold.tables import JOBS_SCHEMA  # noqa: F401 - registers the tables
from raynn.runs import batches
from raynn.runs.results import read_table

pytestmark = pytest.mark.timeout(120)


def _result(job: str, status: str = "ok", epochs: int = 2, accuracy: float = 0.5) -> JobResult:
    history = [
        EpochRecord(job, e, 0.1, 0.5, 1.0, accuracy, 0.01, 0.2, 100.0, 1)
        for e in range(1, epochs + 1)
    ]
    return JobResult(
        job, "mlp", "cosine", 0, 0, status=status, epochs=epochs, val_accuracy=accuracy,
        history=history,
    )  # fmt: skip


def _files(folder, prefix=""):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(prefix))


def test_a_run_leaves_one_file_per_table_holding_every_row(tmp_path, monkeypatch):
    monkeypatch.setattr(batches, "BATCH_ROWS", 5)  # a batch every 5 rows: many batches
    collector = ResultsCollector(tmp_path)
    most = 0
    for n in range(40):
        collector.write_job(_result(f"job{n}", epochs=3))
        most = max(most, len(_files(tmp_path / "epochs")))
    assert most <= batches.MAX_BATCHES + 2  # merged as they go: batches and a journal
    collector.close()
    for table, rows in (("jobs", 40), ("epochs", 120)):
        (name,) = _files(tmp_path / table)
        assert pq.read_table(tmp_path / table / name).num_rows == rows
    assert sorted(read_table(tmp_path, "jobs")["job_id"]) == sorted(f"job{n}" for n in range(40))


def test_a_later_write_of_a_job_replaces_its_rows_across_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(batches, "BATCH_ROWS", 2)
    collector = ResultsCollector(tmp_path)
    collector.write_job(_result("a", status="failed", epochs=3, accuracy=0.1))
    collector.write_job(_result("b"))
    collector.write_job(_result("a", epochs=2, accuracy=0.9))  # a later attempt
    jobs, epochs = read_table(tmp_path, "jobs"), read_table(tmp_path, "epochs")
    assert dict(zip(jobs["job_id"], jobs["status"], strict=True)) == {"a": "ok", "b": "ok"}
    assert sorted(epochs.loc[epochs["job_id"] == "a", "epoch"]) == [1, 2]
    assert set(epochs.loc[epochs["job_id"] == "a", "val_accuracy"]) == {0.9}
    collector.close()
    assert len(read_table(tmp_path, "epochs")) == 4


def _write_then_die(run_dir, jobs):
    collector = ResultsCollector(run_dir)
    for job in jobs:
        collector.write_job(_result(job))
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no flush


def test_rows_written_before_a_kill_are_read_and_taken_over(tmp_path):
    child = multiprocessing.get_context("fork").Process(
        target=_write_then_die, args=(tmp_path, ["a", "b", "c"])
    )
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    assert _files(tmp_path / "jobs", "_journal")  # the rows were only in the journal
    assert sorted(read_table(tmp_path, "jobs")["job_id"]) == ["a", "b", "c"]
    assert len(read_table(tmp_path, "epochs")) == 6
    again = ResultsCollector(tmp_path)  # a resumed run's writer folds the journal in
    again.write_job(_result("d"))
    again.close()
    assert _files(tmp_path / "jobs", "_journal") == []
    assert sorted(read_table(tmp_path, "jobs")["job_id"]) == ["a", "b", "c", "d"]


def test_a_torn_journal_keeps_its_whole_records(tmp_path):
    table = batches.BatchedTable(tmp_path / "jobs", "job_id")
    for job in ("a", "b", "c"):
        table.put(job, [_result(job).row()], JOBS_SCHEMA)
    (journal,) = (tmp_path / "jobs").glob("_journal-*")
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) - 10])  # a power loss in the last record
    assert sorted(read_table(tmp_path, "jobs")["job_id"]) == ["a", "b"]
    journal.write_bytes(data[:5])  # ... or in its header
    assert read_table(tmp_path, "jobs").empty


def test_a_crash_in_a_merge_leaves_duplicates_that_readers_do_not_see(tmp_path, monkeypatch):
    monkeypatch.setattr(batches, "BATCH_ROWS", 1)  # a batch per job
    collector = ResultsCollector(tmp_path)
    for job in ("a", "b"):
        collector.write_job(_result(job, status="failed"))
    collector.write_job(_result("a"))
    olds = {p.name: p.read_bytes() for p in (tmp_path / "jobs").glob("batch-*")}
    collector.close()  # merged into one file
    for name, data in olds.items():  # as if the merge died before removing its inputs
        (tmp_path / "jobs" / name).write_bytes(data)
    jobs = read_table(tmp_path, "jobs")
    assert dict(zip(jobs["job_id"], jobs["status"], strict=True)) == {"a": "ok", "b": "failed"}


def test_per_job_files_of_an_older_run_rank_below_its_batches(tmp_path):
    old = JobResult("a", "mlp", "cosine", 0, 0, status="failed")
    from raynn.kfold.tables import search_schema
    from raynn.runs.results import write_table

    write_table(
        tmp_path / "jobs" / "a-1234abcd.parquet", [old.row()], search_schema(JOBS_SCHEMA, ())
    )
    collector = ResultsCollector(tmp_path)  # the resumed run
    collector.write_job(_result("a"))
    assert read_table(tmp_path, "jobs")["status"].tolist() == ["ok"]
    collector.close()
    assert read_table(tmp_path, "jobs")["status"].tolist() == ["ok"]


def test_an_ok_row_stays_final_for_a_resumed_writer(tmp_path):
    first = ResultsCollector(tmp_path)
    first.write_job(_result("a"))
    first.close()
    ResultsCollector(tmp_path).write_job(_result("a", status="failed", epochs=1))
    assert read_table(tmp_path, "jobs")["status"].tolist() == ["ok"]
    assert len(read_table(tmp_path, "epochs")) == 2
