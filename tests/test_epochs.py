"""The one epoch loop (raynn.core.epochs): its hooks' order, its stop, its one NaN policy for
both kinds, its checkpoints; the serial HOGWILD baseline syncing through NodeSync."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from raynn.core.epochs import (
    Callback,
    Checkpointing,
    EpochLoop,
    Hooks,
    NonFiniteLoss,
    Trainable,
)
from raynn.errors import TrainingError
from tests.conftest import REPO, make_spec

pytestmark = pytest.mark.timeout(300)


class Toy(Trainable):
    """Two epochs of given losses, one per step, read at once (``per_step``) or as tensors
    at the epoch's end; logs every hook it sees."""

    def __init__(self, log: list, losses: list[list[float]], per_step: bool) -> None:
        self.log, self.losses, self.per_step = log, losses, per_step

    def batches(self, loop: EpochLoop) -> list[float]:
        epoch = self.losses[loop.state.epoch]
        if not self.per_step:
            loop.state.epoch_losses = torch.tensor(epoch)
        return epoch

    def train_step(self, loop: EpochLoop, batch: float) -> None:
        self.log.append(("step", loop.state.epoch, loop.state.batch))
        if self.per_step:
            loop.state.step_loss = batch

    def on_step_end(self, loop: EpochLoop) -> None:
        self.log.append(("toy.on_step_end", loop.state.epoch, loop.state.batch))

    def on_epoch_end(self, loop: EpochLoop) -> None:
        self.log.append(("toy.on_epoch_end", loop.state.epoch))


class Recorder(Callback):
    def __init__(self, log: list, name: str, stop_after: int | None = None) -> None:
        self.log, self.name, self.stop_after, self.asked = log, name, stop_after, 0

    def on_train_begin(self, loop: EpochLoop) -> None:
        self.log.append((f"{self.name}.on_train_begin",))

    def on_epoch_begin(self, loop: EpochLoop) -> None:
        self.log.append((f"{self.name}.on_epoch_begin", loop.state.epoch))

    def should_stop(self, loop: EpochLoop) -> bool:
        self.asked += 1
        return self.stop_after is not None and self.asked > self.stop_after

    def on_step_begin(self, loop: EpochLoop) -> None:
        self.log.append((f"{self.name}.on_step_begin", loop.state.epoch, loop.state.batch))

    def on_step_end(self, loop: EpochLoop) -> None:
        self.log.append((f"{self.name}.on_step_end", loop.state.epoch, loop.state.batch))

    def on_epoch_end(self, loop: EpochLoop) -> None:
        self.log.append((f"{self.name}.on_epoch_end", loop.state.epoch))

    def on_train_end(self, loop: EpochLoop) -> None:
        self.log.append((f"{self.name}.on_train_end",))


def _expected_step(e: int, b: int) -> list[tuple]:
    return [
        ("a.on_step_begin", e, b),
        ("b.on_step_begin", e, b),
        ("step", e, b),
        ("toy.on_step_end", e, b),
        ("a.on_step_end", e, b),
        ("b.on_step_end", e, b),
    ]


def test_hooks_fan_out_in_order_guard_then_trainable_then_callbacks():
    log: list = []
    toy = Toy(log, [[1.0, 2.0], [3.0]], per_step=True)
    state = EpochLoop(toy, [Recorder(log, "a"), Recorder(log, "b")]).run(0, 2)
    expected = [("a.on_train_begin",), ("b.on_train_begin",)]
    for e, steps in ((0, 2), (1, 1)):
        expected += [("a.on_epoch_begin", e), ("b.on_epoch_begin", e)]
        for b in range(steps):
            expected += _expected_step(e, b)
        expected += [("toy.on_epoch_end", e), ("a.on_epoch_end", e), ("b.on_epoch_end", e)]
    expected += [("a.on_train_end",), ("b.on_train_end",)]
    assert log == expected
    assert not state.stopped and state.failure is None and state.epoch == 1


def test_a_resumed_loop_starts_at_its_first_epoch():
    log: list = []
    EpochLoop(Toy(log, [[1.0], [2.0], [3.0]], per_step=True)).run(1, 3)
    assert [entry for entry in log if entry[0] == "step"] == [("step", 1, 0), ("step", 2, 0)]


def test_should_stop_leaves_before_the_step_and_still_ends_the_loop():
    log: list = []
    toy = Toy(log, [[1.0, 2.0, 3.0], [4.0]], per_step=True)
    state = EpochLoop(toy, [Recorder(log, "a", stop_after=2)]).run(0, 2)
    assert state.stopped and state.failure is None
    assert [entry for entry in log if entry[0] == "step"] == [("step", 0, 0), ("step", 0, 1)]
    assert ("toy.on_epoch_end", 0) not in log and log[-1] == ("a.on_train_end",)


@pytest.mark.parametrize("per_step", [True, False])
def test_the_nan_guard_ends_the_loop_the_same_way_wherever_it_reads_the_loss(per_step):
    log: list = []
    toy = Toy(log, [[1.0, math.inf, 2.0], [3.0]], per_step=per_step)
    state = EpochLoop(toy, [Recorder(log, "a")]).run(0, 2)
    assert state.failure == NonFiniteLoss(math.inf, 0, 1)  # epoch 1, batch 2, counted from 1
    assert (
        state.failure.describe("batch 2", "fix it") == "loss became inf at epoch 1, batch 2; fix it"
    )
    # nothing after the guard sees the failed step or epoch; no epoch follows; the end runs
    steps = [entry for entry in log if entry[0] == "step"]
    assert steps == (
        [("step", 0, 0), ("step", 0, 1)] if per_step else [("step", 0, b) for b in range(3)]
    )
    ends = [entry[2] for entry in log if entry[0] == "a.on_step_end"]
    assert ends == ([0] if per_step else [0, 1, 2])  # a loss read per step: not its step's end
    assert not [entry for entry in log if entry[0].endswith("on_epoch_end")]
    assert log[-1] == ("a.on_train_end",) and not state.stopped


def test_on_train_end_runs_when_a_hook_raises():
    log: list = []

    class Raises(Callback):
        def on_epoch_end(self, loop: EpochLoop) -> None:
            raise KeyError("raced out")

    with pytest.raises(KeyError, match="raced out"):
        EpochLoop(Toy(log, [[1.0], [2.0]], True), [Raises(), Recorder(log, "a")]).run(0, 2)
    assert log[-1] == ("a.on_train_end",) and ("step", 1, 0) not in log


def test_hooks_call_plain_callables_with_the_state():
    seen: list = []
    state = EpochLoop(
        Toy([], [[1.0, 2.0], [3.0]], per_step=True),
        [
            Hooks(
                before_step=lambda s: seen.append(("before", s.epoch, s.batch)),
                after_step=lambda s: seen.append(("after", s.step_loss)),
                after_epoch=lambda s: seen.append(("epoch", s.epoch)),
                should_stop=lambda: len(seen) >= 5,
            )
        ],
    ).run(0, 2)
    first_epoch = [("before", 0, 0), ("after", 1.0), ("before", 0, 1), ("after", 2.0)]
    assert seen == [*first_epoch, ("epoch", 0)]
    assert state.stopped and state.epoch == 1  # asked before the second epoch's step


class FakeWriter:
    def __init__(self) -> None:
        self.saved: list[int] = []
        self.closed = 0

    def submit(self, state: dict) -> None:
        self.saved.append(state["epoch"])

    def close(self) -> None:
        self.closed += 1


class Saves(Toy):
    def save_state(self, loop: EpochLoop) -> dict:
        return {"epoch": loop.state.epoch + 1}

    def on_epoch_end(self, loop: EpochLoop) -> None:
        loop.state.epoch_seconds = 0.6


@pytest.mark.parametrize(
    ("every_epochs", "every_seconds", "saved"),
    [(2, None, [2, 4]), (None, 1.0, [2, 4]), (None, 0.5, [1, 2, 3, 4]), (None, 0.0, [])],
)
def test_checkpoints_are_due_by_epochs_or_training_time_never_after_the_last(
    every_epochs, every_seconds, saved
):
    writer = FakeWriter()
    toy = Saves([], [[1.0]] * 5, per_step=True)
    EpochLoop(toy, [Checkpointing(writer, 5, every_epochs, every_seconds)]).run(0, 5)
    assert writer.saved == saved and writer.closed == 1


# -- the two kinds -----------------------------------------------------------------------------

NAN_STEP = 3  # the training forward whose loss is NaN (counted from 1)


class _NanAt(nn.Module):
    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(x.flatten(1))
        if self.training:
            self.forwards += 1
            if self.forwards == NAN_STEP:
                return logits * float("nan")
        return logits


def nan_at_third_step(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """An MLP whose third training forward gives NaN logits (a spec's ``model``)."""
    c, h, w = in_shape
    return _NanAt(c * h * w, num_classes)


MODEL = "tests.test_epochs:nan_at_third_step"


class Store:
    def __init__(self) -> None:
        self.saved: list[bytes] = []

    def load_checkpoint(self, job_id: str) -> bytes | None:
        return None

    def save_checkpoint(self, job_id: str, blob: bytes) -> None:
        self.saved.append(blob)


def test_a_nan_loss_fails_a_kfold_job_at_its_epoch_and_batch(tmp_path):
    from raynn.kfold.runner import prepare
    from raynn.kfold.train import train_job

    spec = make_spec(tmp_path, models=[MODEL], training={"epochs": 2, "checkpoint_seconds": 1e-9})
    plan = prepare(spec)
    calls: list = []
    store = Store()
    result = train_job(plan.jobs[0], plan.data, threads=1, checkpoints=store, on_epoch=calls.append)
    assert result.status == "failed"
    assert (
        result.error
        == f"loss became nan at epoch 1, batch {NAN_STEP}; lower optimizer.lr or check the data"
    )
    assert result.history == [] and calls == [] and store.saved == []
    assert math.isnan(result.val_accuracy) and result.epochs == 0


def _hogwild_spec(tmp_path: Path, **overrides: Any) -> Any:
    from raynn.spec.hogwild import hogwild_spec_from_dict

    raw = yaml.safe_load((REPO / "jobs" / "hogwild_digits.yaml").read_text())
    raw["output"] = {"dir": str(tmp_path / "runs")}
    raw["dataset"]["limit"] = 400
    raw["training"] = {**raw["training"], "epochs": 2}
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    return hogwild_spec_from_dict(raw)


def test_a_nan_loss_fails_a_hogwild_worker_at_its_epoch_and_step_before_the_step(tmp_path):
    from raynn.core.data import load_dataset
    from raynn.core.optim import make_optimizer, make_schedule
    from raynn.hogwild.loop import TrainContext, build, train
    from raynn.hogwild.shared_params import flatten

    spec = _hogwild_spec(tmp_path, model=MODEL)
    data = load_dataset(spec.dataset)
    model = build(spec, data)
    opt = make_optimizer(spec, model)
    ctx = TrainContext.of(spec, model, opt, make_schedule(spec, opt, 13), data, label="w0")
    after: list = []
    with pytest.raises(TrainingError) as err:
        train(ctx, [Hooks(after_step=lambda s: after.append((s.steps, flatten(model))))])
    assert str(err.value) == (
        f"loss became nan at epoch 1, step {NAN_STEP} of w0; "
        "lower optimizer.lr (spec key 'optimizer.lr') or check the data"
    )
    # the steps before it ran; the failing one never reached the weights (nor the hooks)
    assert [steps for steps, _ in after] == list(range(1, NAN_STEP))
    assert np.array_equal(flatten(model), after[-1][1])


# -- the serial baseline syncs as a node does -------------------------------------------------


def test_a_model_pushed_through_node_sync_without_folding_trains_on_untouched():
    from raynn.hogwild.client import ServerClient
    from raynn.hogwild.node_sync import ModelWeights, NodeSync
    from raynn.hogwild.server import ParameterServer
    from raynn.hogwild.shared_params import flatten

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))  # 12 parameters, 4 buffers
    start = flatten(model)
    server = ParameterServer(start, param_numel=12)
    server.start(["serial"])
    weights = ModelWeights(model)
    client = ServerClient([server], [(0, start.size)])
    sync = NodeSync("serial", weights, client, start, 0, None, 0, 12, fold=False)
    for step in (1, 2):
        with torch.no_grad():
            model[0].weight.mul_(1.7).add_(0.3)
            model[1].running_mean.add_(step)
        before = flatten(model)
        weights.record(step * 5, step * 50)
        sync.push()
        assert np.array_equal(flatten(model), before)  # the reply is not folded back
        w, version, steps, samples = server.weights()
        assert version == step and (steps, samples) == (step * 5, step * 50)
        assert np.allclose(w, before) and np.array_equal(w[12:], before[12:])  # buffers: values
        assert np.array_equal(sync.last, w) and sync.stats.pushes == step


def _serial_row(tmp_path: Path, every: float) -> tuple[dict, dict]:
    from raynn.hogwild.runner import run

    spec = _hogwild_spec(tmp_path / str(every), training={"eval_every_seconds": every})
    result = run(spec, executor="serial", threads=1, progress=False)
    row = pd.read_parquet(result.run_dir / "hogwild").iloc[0].to_dict()
    server = json.loads((result.run_dir / "run.json").read_text())["runs"][-1]
    return row, server["servers"][0]


def test_the_serial_baseline_pushes_through_node_sync_and_trains_the_same_however_often(
    tmp_path, monkeypatch
):
    from raynn.hogwild.node_sync import NodeSync

    pushes = []
    real = NodeSync.push

    def counting(self: NodeSync) -> None:
        pushes.append(self.node)
        real(self)

    monkeypatch.setattr(NodeSync, "push", counting)
    once, server_once = _serial_row(tmp_path, 1e6)  # only the final push
    assert pushes == ["serial"] and server_once["pushes"] == 1
    pushes.clear()
    often, server_often = _serial_row(tmp_path, 1e-6)  # a push and an evaluation every step
    assert len(pushes) == server_often["pushes"] == often["steps"] + 1
    assert server_often["samples"] == server_once["samples"] == once["samples"] == 800
    # the model's training never depends on its pushes: the same losses, bit for bit
    for key in ("epochs", "steps", "samples", "loss", "accuracy", "pushes", "pulls", "status"):
        assert once[key] == often[key], key
    assert once["pushes"] == 0 and once["status"] == "ok"  # the row is the baseline's own
