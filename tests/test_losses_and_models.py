"""training.loss (built-ins, factories, seed criteria) and the trained weights a run keeps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from raynn import load_model
from raynn.cli import main
from raynn.compat import AsyncKFold
from raynn.compat.kfold import _trainer_params
from raynn.core.data import load_dataset
from raynn.core.losses import loss_from_criterion
from raynn.errors import RaynnError, SpecError
from raynn.kfold.executors.serial import SerialExecutor
from raynn.kfold.runner import prepare, run
from raynn.kfold.train import train_job
from raynn.spec import Component, spec_from_dict
from tests.conftest import TINY, make_spec

TINY_RUN = {
    "models": ["mlp"],
    "dataset": {"name": "digits", "limit": 200},
    "training": {"epochs": 1, "batch_size": 32},
}


class LogSoftmaxMLP(nn.Module):
    """A classifier whose output is log-probabilities (for ``nll``)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 32), nn.ReLU())
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.head(self.body(x)), dim=1)


def log_softmax_mlp(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return LogSoftmaxMLP(int(np.prod(in_shape)), num_classes)


def not_a_module() -> str:
    return "cross entropy"


def summed_loss() -> nn.Module:
    return nn.CrossEntropyLoss(reduction="sum")


def _epoch_losses(tmp_path, **training):
    """Train the first job of a tiny spec with ``training`` and return its history."""
    spec = make_spec(tmp_path, **{**TINY_RUN, "training": {**TINY_RUN["training"], **training}})
    plan = prepare(spec)
    job = min(plan.jobs, key=lambda j: j.job_id)
    result = train_job(job, plan.data, threads=1)
    assert result.status == "ok", result.error
    return result


# -- losses -----------------------------------------------------------------------------------
def _formula(logits, target, smoothing=0.0, weight=None):
    """Cross-entropy written out (PyTorch's documented definition), as ``(sum, weight)``: each
    sample's target is (1 - s) on its class plus s / C on every class, each class's term
    weighed by its class weight; the mean divides the sum by the samples' class weights."""
    logp = torch.log_softmax(logits.double(), dim=1)
    n, classes = logp.shape
    w = torch.ones(classes, dtype=torch.float64) if weight is None else torch.tensor(weight)
    w = w.double()
    q = torch.full((n, classes), smoothing / classes, dtype=torch.float64)
    q[torch.arange(n), target] += 1 - smoothing
    per_sample = -(q * logp * w).sum(dim=1)
    return float(per_sample.sum()), float(w[target].sum())


WEIGHT = [1.0] * 9 + [5.0]


@pytest.mark.parametrize(
    "name,args,log_probs",
    [
        ("cross_entropy", {}, False),
        ("cross_entropy", {"label_smoothing": 0.1}, False),
        ("cross_entropy", {"weight": WEIGHT}, False),
        ("cross_entropy", {"label_smoothing": 0.3, "weight": WEIGHT}, False),
        ("nll", {}, True),
        ("nll", {"weight": WEIGHT}, True),
    ],
)
def test_a_built_in_loss_equals_its_formula(name, args, log_probs):
    from raynn.core.losses import build_loss, loss_component

    torch.manual_seed(0)
    logits = torch.randn(12, 10) * 3
    target = torch.tensor([0, 9, 9, 3, 4, 5, 6, 7, 8, 9, 1, 2])
    loss = build_loss(loss_component("training.loss", {"name": name, "args": args}), 10)
    given = torch.log_softmax(logits, dim=1) if log_probs else logits  # nll takes log-probs
    total, weight = _formula(logits, target, args.get("label_smoothing", 0.0), args.get("weight"))
    assert float(loss(given, target)) == pytest.approx(total / weight, rel=1e-5)  # training
    loss.eval()
    assert loss.total(given, target) == pytest.approx((total, weight), rel=1e-5)  # evaluation


@pytest.mark.parametrize(
    "args", [{"label_smoothing": 0.1}, {"weight": WEIGHT}], ids=["smoothing", "weight"]
)
def test_a_run_reports_the_configured_loss_and_records_it(tmp_path, args):
    loss = {"name": "cross_entropy", "args": args}
    spec = make_spec(
        tmp_path,
        **{**TINY_RUN, "training": {**TINY_RUN["training"], "loss": loss}},
        output={"dir": str(tmp_path / "runs"), "keep_models": "all"},
    )
    result = run(spec, executor=SerialExecutor(threads=1), progress=False)
    assert result.ok and len(result.jobs) == 2
    plan = prepare(spec)
    folds = {j.job_id: plan.data.folds[j.fold][1] for j in plan.jobs}
    smoothing, weight = args.get("label_smoothing", 0.0), args.get("weight")
    for row in result.jobs.itertuples():
        # the kept weights are the ones the last validation scored: recompute its loss
        model = load_model(result.run_dir, row.job_id)
        val = folds[row.job_id]
        with torch.no_grad():
            logits = model(torch.from_numpy(plan.data.x_train[val]))
            test_logits = model(torch.from_numpy(plan.data.x_test))
        total, count = _formula(logits, torch.from_numpy(plan.data.y_train[val]), smoothing, weight)
        assert row.val_loss == pytest.approx(total / count, rel=1e-4)
        total, count = _formula(test_logits, torch.from_numpy(plan.data.y_test), smoothing, weight)
        assert row.test_loss == pytest.approx(total / count, rel=1e-4)
    meta = json.loads((result.run_dir / "run.json").read_text())
    assert meta["spec"]["training"]["loss"] == loss
    assert spec_from_dict(meta["spec"]).training.loss == spec.training.loss  # resumable


def test_nll_trains_a_log_softmax_model(tmp_path):
    models = [{"name": "tests.test_losses_and_models:log_softmax_mlp", "label": "lsm"}]
    result = _epoch_losses(tmp_path, loss="nll", epochs=2)
    assert math.isfinite(result.val_loss)
    training = {"epochs": 4, "batch_size": 16, "loss": "nll"}
    spec = make_spec(
        tmp_path, **{**TINY_RUN, "models": models, "training": training}, optimizer={"lr": 0.01}
    )
    out = run(spec, executor=SerialExecutor(threads=1), progress=False)
    assert out.ok and (out.jobs["status"] == "ok").all()
    assert (out.jobs["val_accuracy"] > 0.5).all()  # it learned: ten classes, 1/10 by chance
    assert (out.jobs["val_loss"] > 0).all()  # NLL of log-probabilities: a positive number


@pytest.mark.parametrize(
    ("loss", "where"),
    [
        ("hinge", "'training.loss': unknown loss 'hinge'; valid: cross_entropy, nll"),
        ({"name": "nll", "args": {"label_smoothing": 0.1}}, "'training.loss.args.label_smoothing'"),
        ({"name": "cross_entropy", "args": {"label_smoothing": 1.0}}, "[0, 1)"),
        ({"name": "cross_entropy", "args": {"weight": [1, 0]}}, "'training.loss.args.weight'"),
        ({"name": "cross_entropy", "args": {"reduction": "sum"}}, "use mean"),
        ({"name": "cross_entropy", "oops": 1}, "'training.loss': unknown key(s)"),
        (3, "'training.loss': must be a loss name"),
    ],
)
def test_a_bad_loss_spec_is_one_line_naming_the_key(loss, where):
    raw = {**TINY, "training": {"loss": loss}}
    with pytest.raises(SpecError) as err:
        spec_from_dict(raw)
    assert where in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("loss", "where"),
    [
        (
            {"name": "cross_entropy", "args": {"weight": [1.0, 2.0]}},
            "2 numbers for a dataset of 10",
        ),
        ("tests.test_losses_and_models:not_a_module", "returned str, not a torch.nn.Module"),
        ("tests.test_losses_and_models:summed_loss", "reduces by 'sum'"),
        ({"name": "tests.test_losses_and_models:summed_loss", "args": {"x": 1}}, "failed"),
    ],
)
def test_a_loss_that_does_not_fit_the_data_is_refused_before_training(tmp_path, loss, where):
    spec = make_spec(tmp_path, **{**TINY_RUN, "training": {"loss": loss}})
    with pytest.raises(SpecError) as err:
        prepare(spec)
    assert "'training.loss" in str(err.value) and where in str(err.value)
    assert "\n" not in str(err.value)


def test_the_cli_exits_2_for_a_spec_with_a_bad_loss(tmp_path, capsys):
    path = tmp_path / "spec.json"
    raw = {**TINY, "training": {"loss": {"name": "cross_entropy", "args": {"smoothing": 0.1}}}}
    path.write_text(json.dumps(raw))
    assert main(["run", str(path), "--serial", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'training.loss.args.smoothing'" in err


def test_the_seed_criteria_map_onto_training_loss():
    w = torch.arange(1.0, 11.0)
    ce = loss_from_criterion(nn.CrossEntropyLoss(weight=w, label_smoothing=0.1))
    assert (ce.name, dict(ce.args)) == (
        "cross_entropy",
        {"weight": w.tolist(), "label_smoothing": 0.1},
    )
    assert loss_from_criterion(nn.CrossEntropyLoss()) == Component("cross_entropy")
    assert loss_from_criterion(None) == Component("cross_entropy")
    assert loss_from_criterion(nn.NLLLoss()).name == "nll"
    assert loss_from_criterion(nn.CrossEntropyLoss).name == "cross_entropy"
    cls = loss_from_criterion(nn.MultiMarginLoss)  # a class: each job builds one
    assert cls.factory is nn.MultiMarginLoss and cls.name == "torch.nn.modules.loss:MultiMarginLoss"
    fac = loss_from_criterion(summed_loss)  # a factory function (checked against the data)
    assert fac.factory is summed_loss
    inst = loss_from_criterion(nn.MultiMarginLoss(margin=2.0))  # an instance: copies
    built = inst.factory()
    assert isinstance(built, nn.MultiMarginLoss) and built.margin == 2.0
    for bad, why in [
        (nn.CrossEntropyLoss(ignore_index=3), "ignore_index"),
        (nn.CrossEntropyLoss(reduction="sum"), "reduction='sum'"),
        (nn.NLLLoss(reduction="none"), "use mean"),
        (nn.MSELoss(), "class-index targets"),
        (nn.functional.cross_entropy, "looks like a loss function"),
        (dict, "not a torch.nn.Module"),
        (42, "it is not a loss"),
    ]:
        with pytest.raises(SpecError) as err:
            loss_from_criterion(bad)
        assert why in str(err.value) and "\n" not in str(err.value)


# -- weights out -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """The same two-model spec run with keep_models all, best (+ refit) and none."""
    root = tmp_path_factory.mktemp("keep")
    out = {}
    for keep in ("all", "best", "none"):
        spec = make_spec(
            root,
            **{**TINY_RUN, "models": ["mlp", "lenet"], "schedulers": ["cosine", "none"]},
            output={"dir": str(root / keep), "keep_models": keep, "refit": keep == "best"},
        )
        out[keep] = run(spec, executor=SerialExecutor(threads=1), progress=False)
    return out


def _files(result):
    folder = result.run_dir / "models"
    return sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []


def test_keep_models_best_keeps_exactly_the_best_configurations_folds(kept):
    result = kept["best"]
    means = result.jobs.groupby(["model", "scheduler"])["val_accuracy"].mean()
    assert means.nunique() == len(means)  # no tie: the best is unambiguous here
    model, sched = means.idxmax()
    best = result.jobs[(result.jobs["model"] == model) & (result.jobs["scheduler"] == sched)]
    from raynn.runs.files import file_stem

    assert _files(result) == sorted([f"{file_stem(j)}.pt" for j in best["job_id"]] + ["refit.pt"])
    meta = json.loads((result.run_dir / "run.json").read_text())
    assert (meta["models"]["best"]["model"], meta["models"]["best"]["scheduler"]) == (model, sched)


def test_keep_models_all_keeps_every_job_and_none_keeps_nothing(kept):
    assert len(_files(kept["all"])) == len(kept["all"].jobs) == 8
    assert _files(kept["none"]) == [] and "models" not in json.loads(
        (kept["none"].run_dir / "run.json").read_text()
    )
    with pytest.raises(RaynnError, match="keep_models"):
        load_model(kept["none"].run_dir)


def test_a_loaded_model_scores_the_recorded_test_accuracy(kept):
    result = kept["all"]
    data = load_dataset(make_spec(result.run_dir, **TINY_RUN).dataset)
    for row in result.jobs.itertuples():
        model = load_model(result.run_dir, row.job_id)
        with torch.no_grad():
            accuracy = float((model(data.x_test).argmax(1).numpy() == data.y_test).mean())
        assert accuracy == pytest.approx(row.test_accuracy, abs=1e-6)
        assert model.info["job_id"] == row.job_id and not model.training


def test_refit_writes_a_model_and_load_model_returns_it_by_default(kept):
    result = kept["best"]
    meta = json.loads((result.run_dir / "run.json").read_text())
    assert meta["refit"]["status"] == "ok" and meta["refit"]["samples"] == 200
    model = load_model(result.run_dir)  # the refit model by default
    assert model.info["job_id"] == meta["refit"]["job_id"]
    data = load_dataset(make_spec(result.run_dir, **TINY_RUN).dataset)
    with torch.no_grad():
        accuracy = float(
            (model(torch.from_numpy(data.x_test)).argmax(1) == torch.from_numpy(data.y_test))
            .float()
            .mean()
        )
    assert accuracy == pytest.approx(meta["refit"]["test_accuracy"], abs=1e-6)


# -- the seed API ---------------------------------------------------------------------------
class _Saves:
    """A checkpoint store that counts saves."""

    def __init__(self) -> None:
        self.saved: list[int] = []

    def load_checkpoint(self, job_id: str) -> bytes | None:
        return None

    def save_checkpoint(self, job_id: str, blob: bytes) -> None:
        self.saved.append(len(blob))


def test_save_checkpoint_frequency_is_an_epoch_cadence(tmp_path):
    training, _ = _trainer_params({"save_checkpoint_frequency": 2})
    assert training == {"checkpoint_epochs": 2, "checkpoint_seconds": 0.0}
    for every, saves in ((1, 2), (2, 1), (0, 0)):
        spec = make_spec(
            tmp_path,
            **{
                **TINY_RUN,
                "training": {
                    "epochs": 3,
                    **_trainer_params({"save_checkpoint_frequency": every})[0],
                },
            },
        )
        plan = prepare(spec)
        store = _Saves()
        assert train_job(plan.jobs[0], plan.data, threads=1, checkpoints=store).status == "ok"
        assert len(store.saved) == saves  # after epochs 1 and 2 / after 2 / never (not the last)


def test_print_frequency_switches_the_progress_view():
    assert _trainer_params({"print_frequency": 15}) == ({}, True)
    assert _trainer_params({"print_frequency": 0}) == ({}, False)
    for bad, why in [
        ({"print_frequency": -1}, "print_frequency"),
        ({"save_checkpoint_frequency": 1.5}, "save_checkpoint_frequency"),
        ({"print_frequency": 0, "progress": True}, "disagree"),
        ({"verbose": 1}, "unknown key"),
    ]:
        with pytest.raises(SpecError, match=why):
            _trainer_params(bad)


def test_async_kfold_trains_nll_and_returns_its_best_model(tmp_path):
    data = load_dataset(make_spec(tmp_path, **TINY_RUN).dataset)

    class Net(LogSoftmaxMLP):
        def __init__(self, num_classes: int = 10) -> None:
            super().__init__(64, num_classes)

    def adam(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), 0.01)

    kfold = AsyncKFold(2, data, str(tmp_path / "seed"), nn.NLLLoss(), 16, executor="serial")
    table = kfold([Net], ["none"], adam, {"epochs": 3, "print_frequency": 0})
    assert (table["status"] == "ok").all() and (table["val_accuracy"] > 0.5).all()
    model = kfold.best_model()
    best = table.loc[table["val_accuracy"].idxmax()]
    assert model.raynn_info["job_id"] == best["job_id"]
    fold_val = data.folds[int(best["fold"])][1]
    with torch.no_grad():
        out = model(torch.from_numpy(data.x_train[fold_val]))
    accuracy = float((out.argmax(1).numpy() == data.y_train[fold_val]).mean())
    assert accuracy == pytest.approx(best["val_accuracy"], abs=1e-6)
    assert torch.allclose(out.exp().sum(1), torch.ones(len(fold_val)))  # log-probabilities


def test_hogwild_training_uses_the_spec_loss():
    from raynn.core.optim import make_optimizer, make_schedule
    from raynn.hogwild.loop import TrainContext, build, make_loss, train
    from raynn.spec.hogwild import hogwild_spec_from_dict

    losses = []
    for loss in ("cross_entropy", {"name": "cross_entropy", "args": {"label_smoothing": 0.2}}):
        spec = hogwild_spec_from_dict(
            {
                "kind": "hogwild",
                "dataset": {"name": "digits", "limit": 200},
                "training": {"epochs": 1, "loss": loss},
            }
        )
        data = load_dataset(spec.dataset)
        model = build(spec, data)
        opt = make_optimizer(spec, model)
        schedule = make_schedule(spec, opt, 7)
        loss_fn = make_loss(spec, data)
        stats = train(TrainContext(model, opt, schedule, data, 1, 32, seed=0, loss_fn=loss_fn))
        losses.append(stats.loss)
        # the loss the workers train with is the spec's, to the formula
        logits, target = torch.randn(6, 10), torch.tensor([0, 1, 2, 3, 4, 9])
        total, count = _formula(logits, target, 0.0 if loss == "cross_entropy" else 0.2)
        assert float(make_loss(spec, data)(logits, target)) == pytest.approx(total / count, 1e-5)
    assert all(math.isfinite(v) for v in losses)
    with pytest.raises(SpecError, match="'training.loss.args.weight'"):
        make_loss(
            hogwild_spec_from_dict(
                {"kind": "hogwild", "training": {"loss": {"name": "nll", "args": {"weight": [1]}}}}
            ),
            data,
        )
