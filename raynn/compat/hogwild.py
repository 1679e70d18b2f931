"""The seed project's HOGWILD API on top of raynn's HOGWILD machinery.

::

    trainer = DistributedTrainer(num_processes, CrossEntropyLoss(), root_dir, batch_size)
    trainer(model, train_dataset, optimizer, scheduler, epochs=epochs)
    tester = DistributedTester(DataLoader(test_dataset, batch_size=batch_size), root_dir)
    tester(model)

(also importable from :mod:`raynn.compat.kfold`). ``DistributedTrainer`` converts the training set
to arrays once (:func:`raynn.compat.data.convert_dataset`: every sample through
``dataset[i]``, so its transforms apply; uint8, PIL, ``ToTensor()`` and normalised inputs
are stored exactly), builds a ``kind: hogwild`` spec (``num_processes`` workers per node, the
optimizer's class and settings, the scheduler), runs it with :func:`raynn.hogwild.runner.run`
under ``root_dir``, loads the server's final weights into ``model`` and attaches the input
mapping to it (``model.raynn_input``, applied by a forward pre-hook): ``model(x)`` then takes
the tensors the dataset yields and computes what the network computed on them in training.
``model`` may also be a class, a factory or a raynn model name; ``trainer.model`` is the
trained module either way. ``DistributedTester`` is a plain PyTorch evaluation loop over the
loader, so its accuracy is what the user's own loop over the same loader gives.

Limits: the criteria accepted are those of :class:`DistributedTrainer`; the tester's loss is
the criterion the model was trained with (or the one it is given) averaged over the batches
weighted by their size, which is the criterion over the whole set for an unweighted mean
loss; an optimizer or scheduler *object* is
rebuilt for every worker from its class and settings; ``state_dict()`` holds the weights
only (keep ``model.raynn_input`` with them, see :func:`raynn.compat.data.attach_input_mapping`).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raynn.compat.data import (
    attach_input_mapping,
    batch_tensor,
    convert_dataset,
    instance_factory,
    model_instance,
)
from raynn.core.optim import LRSchedule
from raynn.errors import RaynnError
from raynn.hogwild.shared_params import load_flat
from raynn.runs.results import write_json
from raynn.spec import Component, OptimizerSpec
from raynn.spec.hogwild import HogwildSpec, hogwild_spec_from_dict

CRITERION_ATTR = "raynn_criterion"  # a trained model's criterion, the tester's default loss


def _optimizer_spec(optimizer: Any, model: nn.Module) -> OptimizerSpec:
    """The class and settings of an optimizer (object, or factory ``f(model)``)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        if not callable(optimizer):
            raise RaynnError(f"optimizer must be an Optimizer or a factory, got {optimizer!r}")
        optimizer = optimizer(copy.deepcopy(model))
    cls, defaults = type(optimizer), dict(optimizer.defaults)
    lr = float(optimizer.param_groups[0].get("lr", defaults.get("lr", 0.01)))
    defaults["lr"] = lr
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in defaults.items() if k in accepted}

    def factory(m: nn.Module) -> torch.optim.Optimizer:
        return cls(m.parameters(), **kwargs)

    momentum = float(defaults.get("momentum", 0.0) or 0.0)
    return OptimizerSpec(name=cls.__name__.lower(), lr=lr, momentum=momentum, factory=factory)


def _rebuild_scheduler(template: Any, opt: torch.optim.Optimizer) -> Any:
    """A scheduler of ``template``'s class and settings on ``opt``.

    The constructor is called again with the arguments found as same-named attributes of the
    template (``StepLR``, ``MultiStepLR``, ``CosineAnnealingLR``, ...); a class whose required
    arguments are not recoverable that way is copied and re-pointed at ``opt`` instead.
    """
    cls = type(template)
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, optimizer
    kwargs, missing = {}, False
    for p in params:
        if p.name in ("last_epoch", "verbose") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if hasattr(template, p.name):
            kwargs[p.name] = copy.deepcopy(getattr(template, p.name))
        elif p.default is inspect.Parameter.empty:
            missing = True
    if not missing:
        try:
            return cls(opt, **kwargs)
        except (TypeError, ValueError):
            pass
    for group in opt.param_groups:
        group.setdefault("initial_lr", group["lr"])
    sched = copy.copy(template)
    sched.__dict__ = {k: copy.deepcopy(v) for k, v in template.__dict__.items() if k != "optimizer"}
    sched.optimizer = opt
    return _Quiet(sched)


class _Quiet:
    """A copied scheduler, stepped without torch's "optimizer.step() overridden" warning."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def step(self, *args: Any) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step(*args)

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


def _scheduler_component(scheduler: Any) -> Component:
    """A per-worker schedule from a name, a factory ``f(optimizer)``, an object or None."""
    if scheduler is None:
        return Component("none")
    if isinstance(scheduler, str):
        return Component(scheduler)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau
    if hasattr(scheduler, "step") and hasattr(scheduler, "optimizer"):
        template = scheduler

        def rebind(opt: torch.optim.Optimizer, epochs: int, steps: int, **_: Any) -> LRSchedule:
            step_on = "metric" if isinstance(template, plateau) else "epoch"
            return LRSchedule(_rebuild_scheduler(template, opt), step_on)

        return Component("seed_scheduler", factory=rebind)
    if callable(scheduler):

        def build(opt: torch.optim.Optimizer, epochs: int, steps: int, **_: Any) -> LRSchedule:
            sched = scheduler(opt)
            return LRSchedule(sched, "metric" if isinstance(sched, plateau) else "epoch")

        return Component("seed_scheduler", factory=build)
    raise RaynnError(f"scheduler must be a name, a factory or a scheduler, got {scheduler!r}")


class DistributedTrainer:
    """HOGWILD training of one model over ``num_processes`` pinned workers (seed API).

    Args:
        num_processes: workers per node (each pinned to one core), or ``"auto"``.
        criterion: the loss (:func:`raynn.core.losses.loss_from_criterion`): ``nn.CrossEntropyLoss``
            (with ``weight``/``label_smoothing``), ``nn.NLLLoss``, a loss class, instance or
            factory; anything else is refused.
        root_dir: where run directories are written.
        batch_size: samples per step of one worker.
        **spec_overrides: extra spec sections, e.g. ``hogwild={"push_every": 10}``.
    """

    def __init__(
        self,
        num_processes: int | str,
        criterion: Any,
        root_dir: str,
        batch_size: int,
        **spec_overrides: Any,
    ) -> None:
        from raynn.core.losses import loss_from_criterion

        self.loss = loss_from_criterion(criterion)  # training.loss; refused here, one line
        # the tester's default loss: a loss instance as given (a class or factory: none)
        self.criterion = criterion if isinstance(criterion, nn.Module) else None
        self.num_processes = num_processes
        self.root_dir = str(root_dir)
        self.batch_size = batch_size
        self.spec_overrides = spec_overrides
        self.result: Any = None
        self.spec: HogwildSpec | None = None
        self.model: nn.Module | None = None
        self.input_mapping: Any = None

    def __call__(
        self,
        model: Any,
        train_dataset: Any,
        optimizer: Any,
        scheduler: Any = None,
        epochs: int = 10,
        *,
        executor: str = "ray",
        progress: bool = False,
        **run_options: Any,
    ) -> Any:
        """Train ``model`` in place on ``train_dataset``; returns the run's ``RunResult``."""
        from raynn.hogwild.runner import final_weights, run

        data, mapping = convert_dataset(train_dataset)
        raw: dict[str, Any] = {
            "kind": "hogwild",
            "name": "distributed_trainer",
            "training": {"epochs": epochs, "batch_size": self.batch_size, "loss": self.loss},
            "hogwild": {"workers_per_node": self.num_processes},
            "output": {"dir": self.root_dir},
        }
        for key, value in self.spec_overrides.items():
            merged = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
            raw[key] = merged
        base = hogwild_spec_from_dict(raw)
        instance = model_instance(model, data, base.seed)
        spec = dataclasses.replace(
            base,
            model=Component(type(instance).__name__, factory=instance_factory(instance)),
            optimizer=_optimizer_spec(optimizer, instance),
            scheduler=_scheduler_component(scheduler),
        )
        self.spec = spec
        self.result = run(spec, executor=executor, progress=progress, dataset=data, **run_options)
        if self.result.status != "completed":
            errors = self.result.jobs["error"].dropna().unique().tolist()
            raise RaynnError(
                f"HOGWILD training failed ({'; '.join(errors) or self.result.status}); see "
                f"{self.result.run_dir}"
            )
        load_flat(instance, final_weights(self.result.run_dir))
        self.model = attach_input_mapping(instance, mapping)
        # the tester's default loss; in __dict__, so it is no submodule of the model
        self.model.__dict__[CRITERION_ATTR] = self.criterion
        self.input_mapping = mapping
        return self.result


class DistributedTester:
    """Evaluates a trained model on a test loader and writes the result under ``root_dir``.

    Args:
        test_loader: yields ``(images, labels)`` batches (tensors, PIL images or arrays).
        root_dir: where ``test_results.json`` is written.
        criterion: the loss to report, ``criterion(logits, labels)``; None: the criterion the
            model was trained with by :class:`DistributedTrainer`, else cross-entropy.
    """

    def __init__(self, test_loader: Any, root_dir: str, criterion: Any = None) -> None:
        self.test_loader = test_loader
        self.root_dir = Path(root_dir)
        self.criterion = criterion

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        """Loss, accuracy and per-class accuracy of ``model`` on the loader; also written to JSON.

        A plain PyTorch evaluation loop: each batch goes to ``model`` as the loader yields it
        (non-tensor batches are stacked into float32 NCHW tensors). A model trained by
        :class:`DistributedTrainer` carries its input mapping, so it sees exactly what training
        fed it; any other model sees the loader's values unchanged.
        """
        criterion = self.criterion or model.__dict__.get(CRITERION_ATTR) or nn.CrossEntropyLoss()
        reduction = getattr(criterion, "reduction", "mean")
        was_training = model.training
        model.eval()
        loss, preds, labels = 0.0, [], []
        try:
            with torch.no_grad():
                for batch in self.test_loader:
                    x, y = batch_tensor(batch[0]), torch.as_tensor(batch[1], dtype=torch.int64)
                    logits = model(x).float()
                    value = criterion(logits, y)
                    if reduction == "mean":
                        value = value * len(y)
                    loss += float(value.sum())
                    preds.append(logits.argmax(1).numpy())
                    labels.append(y.numpy())
        finally:
            model.train(was_training)
        if not labels:
            raise RaynnError("the test loader yields no batches; pass a loader over test data")
        pred, y_all = np.concatenate(preds), np.concatenate(labels)
        hits, classes = pred == y_all, int(logits.shape[1])
        per_class = [
            float(hits[y_all == c].mean()) if (y_all == c).any() else math.nan
            for c in range(classes)
        ]
        result = {
            "loss": loss / len(y_all),
            "criterion": type(criterion).__name__,
            "accuracy": float(hits.mean()),
            "per_class_accuracy": per_class,
            "samples": int(len(y_all)),
            "time": time.time(),
        }
        write_json(self.root_dir / "test_results.json", result, follow_links=True)  # not a run dir
        return json.loads(json.dumps(result))


__all__ = ["DistributedTester", "DistributedTrainer"]
