"""The live progress view: one row per running job, and an ETA from measured costs."""

from __future__ import annotations

import io
import os
import time
from dataclasses import replace

import pytest
import torch
from rich.console import Console
from torch import nn

from raynn.kfold.grid import Job
from raynn.kfold.queue import JobQueue
from raynn.placement.progress import PendingWork, Progress, QueueStats, RunningJob, eta_seconds
from raynn.spec import Component, TrainingSpec
from tests.conftest import make_spec


def _running(job_id: str, model: str, epoch: int, epochs: int = 10, **kw) -> RunningJob:
    fields = {"node": "n1", "cores": 1, "loss": None, "elapsed": 1.0, "since_epoch": 0.0}
    fields["prior"] = None
    fields.update(kw)
    return RunningJob(job_id, model, epoch=epoch, epochs=epochs, **fields)


def _share_of_epochs_eta(stats: QueueStats, epochs_per_job: int) -> float:
    """The formula the view used before: elapsed time scaled by the share of epochs done."""
    done = (stats.done + stats.failed) * epochs_per_job + sum(j.epoch for j in stats.running_jobs)
    frac = done / (stats.total * epochs_per_job)
    return stats.elapsed * (1 - frac) / frac


def test_eta_weighs_each_models_measured_epochs_and_the_cores():
    # 10 jobs of a slow model (10 s an epoch) then 10 of a fast one (0.5 s), 10 epochs each,
    # on 2 one-core workers. At 20 s the first two slow jobs have done 2 epochs each: the
    # workers have 8 + 4 x 10 slow epochs left (480 s), then 5 fast jobs each (25 s).
    stats = QueueStats(
        total=20,
        pending=18,
        running=2,
        done=0,
        failed=0,
        elapsed=20.0,
        running_jobs=[_running("slow-f0", "slow", 2), _running("slow-f1", "slow", 2)],
        pending_work=[PendingWork("slow", 1, 10, 8, 3.0), PendingWork("fast", 1, 10, 10, 0.1)],
        epoch_seconds={("slow", 1): 10.0, ("fast", 1): 0.5},
        capacity=2,
    )
    truth = 505.0
    assert abs(_share_of_epochs_eta(stats, 10) - truth) / truth > 0.9  # the old view: 980 s
    assert abs(eta_seconds(stats) - truth) / truth < 0.03


def test_eta_scales_the_probe_by_what_epochs_measured_and_waits_for_the_tail():
    # the probe said 2 s an epoch for "slow", 0.1 s for "fast"; slow epochs measured 4 s
    # (twice the probe), so fast ones are taken for 0.2 s until one of them is measured
    pending = [PendingWork("fast", 1, 10, 4, 0.1)]
    stats = QueueStats(
        total=6,
        pending=4,
        running=1,
        done=1,
        failed=0,
        elapsed=40.0,
        running_jobs=[_running("slow-f1", "slow", 5, since_epoch=1.0, prior=2.0)],
        pending_work=pending,
        epoch_seconds={("slow", 1): 4.0},
        measured_seconds=40.0,
        measured_prior=20.0,
        prior_seconds=True,
        capacity=2,
    )
    # 19 s left of the slow job, 4 x 2 s of fast jobs on the other core: the tail decides
    assert abs(eta_seconds(stats) - 19.0) < 1e-6
    stats.running_jobs = []
    stats.pending_work = [PendingWork("fast", 1, 10, 40, 0.1)]
    assert abs(eta_seconds(stats) - 40 * 2.0 / 2) < 1e-6  # 40 fast jobs of 2 s on 2 cores
    # no probe (FLOP units) and nothing measured: unknown; nothing left: zero
    stats.measured_seconds = stats.measured_prior = 0.0
    stats.epoch_seconds, stats.prior_seconds = {}, False
    assert eta_seconds(stats) is None
    stats.pending = stats.running = 0
    assert eta_seconds(stats) == 0.0


def test_queue_stats_list_each_running_job_with_node_cores_epoch_and_loss():
    training = TrainingSpec(epochs=4)
    jobs = [
        Job(f"m-f{i}", i, Component("mlp"), Component("cosine"), i, 0, training=training)
        for i in range(3)
    ]
    queue = JobQueue([replace(j, cost=8.0, max_threads=1) for j in jobs])
    queue.register("w0", "node-a", [0])
    queue.register("w1", "node-b", [1])
    first, second = queue.lease("w0"), queue.lease("w1")
    queue.progress(first.job.job_id, 1, 0.75)
    stats = queue.stats()
    rows = {j.job_id: j for j in stats.running_jobs}
    assert set(rows) == {first.job.job_id, second.job.job_id}
    done = rows[first.job.job_id]
    assert (done.node, done.cores, done.epoch, done.epochs, done.loss) == ("node-a", 1, 1, 4, 0.75)
    assert (rows[second.job.job_id].node, rows[second.job.job_id].loss) == ("node-b", None)
    assert set(stats.epoch_seconds) == {("mlp", 1)} and stats.capacity == 2
    assert stats.prior_seconds and stats.pending_work == [PendingWork("mlp", 1, 4, 1, 2.0)]


def _stats_with_two_jobs() -> QueueStats:
    return QueueStats(
        total=5,
        pending=2,
        running=2,
        done=1,
        failed=0,
        elapsed=75.0,
        running_jobs=[
            _running("vgg_half-cosine-f3", "vgg_half", 3, 15, node="vm", cores=2, loss=0.4123),
            _running("lenet-warm-f0", "lenet", 7, 15, node="vm#numa1", cores=1, elapsed=62.0),
        ],
        epoch_seconds={("vgg_half", 2): 3.0, ("lenet", 1): 1.0},
        capacity=3,
    )


def test_the_live_view_shows_a_row_for_each_running_job():
    stats = _stats_with_two_jobs()
    view = Progress("demo", 15, stream=io.StringIO(), enabled=False)
    console = Console(record=True, width=120, file=io.StringIO(), force_terminal=True)
    console.print(view._render(stats, view.line(stats)))
    lines = console.export_text().splitlines()
    assert lines[0].startswith("[demo] 1/5 jobs done, 2 running, 2 pending, 0 failed")
    assert "20%" in lines[1]  # the bar's own line: the row after it is not drawn over it
    vgg = next(line for line in lines if "vgg_half-cosine-f3" in line).split()
    lenet = next(line for line in lines if "lenet-warm-f0" in line).split()
    assert vgg[1:] == ["vm", "2", "3/15", "0.4123", "0:01"]
    assert lenet[1:] == ["vm#numa1", "1", "7/15", "-", "1:02"]


def test_without_a_terminal_the_view_prints_summary_lines_only():
    stream = io.StringIO()
    view = Progress("demo", 15, stream=stream, line_interval=3600)
    stats = _stats_with_two_jobs()
    for _ in range(5):  # polled often: one line until the counts change
        view.update(stats)
    stats.done, stats.pending = 2, 1
    view.update(stats)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("[demo] ") for line in lines)
    assert "2/5 jobs done" in lines[1] and "vgg_half" not in stream.getvalue()


class _HeldMLP(nn.Module):
    """An MLP whose second epoch waits for ``marker`` to exist (the test makes it; its own
    timeout bounds the wait)."""

    def __init__(self, in_features: int, num_classes: int, marker: str) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)
        self.marker = marker
        self.epochs_started = 0

    def train(self, mode: bool = True) -> _HeldMLP:
        if mode:
            self.epochs_started += 1
            while self.epochs_started == 2 and not os.path.exists(self.marker):
                time.sleep(0.01)
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def held_mlp(in_shape: tuple[int, int, int], num_classes: int, marker: str) -> nn.Module:
    """A model for specs (``tests.test_progress:held_mlp``): see :class:`_HeldMLP`."""
    c, h, w = in_shape
    return _HeldMLP(c * h * w, num_classes, marker)


@pytest.mark.timeout(300)
def test_a_local_run_reports_both_running_jobs_with_their_epochs(tmp_path, monkeypatch):
    import raynn.kfold.runner
    from raynn.kfold.executors.local import LocalExecutor
    from raynn.kfold.runner import run

    marker = tmp_path / "release"
    seen: list[QueueStats] = []

    class Watch(Progress):
        def update(self, stats: QueueStats) -> None:
            # both jobs wait at their second epoch until this has seen them: then go on
            if sum(j.epoch == 1 for j in stats.running_jobs) == 2 and not marker.exists():
                seen.append(stats)
                marker.touch()

    monkeypatch.setattr(raynn.kfold.runner, "Progress", Watch)
    held = {"name": "tests.test_progress:held_mlp", "label": "held"}
    spec = make_spec(
        tmp_path,
        models=[{**held, "args": {"marker": str(marker)}}],
        training={"epochs": 2},
        scheduling={"probe": False, "cores_per_job": 1, "tail_widening": False},
    )
    executor = LocalExecutor(num_cpus=2)
    result = run(spec, executor=executor, progress=False)  # closes the executor
    assert result.ok and seen, "the view never saw both jobs running past their first epoch"
    rows = sorted(seen[0].running_jobs, key=lambda j: j.job_id)
    assert [j.job_id for j in rows] == ["held-cosine-f0", "held-cosine-f1"]
    for job in rows:
        assert (job.node, job.cores, job.epoch, job.epochs) == (executor.node.name, 1, 1, 2)
        assert isinstance(job.loss, float)
