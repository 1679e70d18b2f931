"""The seed project's HOGWILD API on top of raynn's HOGWILD machinery.

::

    trainer = DistributedTrainer(num_processes, CrossEntropyLoss(), root_dir, batch_size)
    trainer(model, train_dataset, optimizer, scheduler, epochs=epochs)
    tester = DistributedTester(DataLoader(test_dataset, batch_size=batch_size), root_dir)
    tester(model)

``DistributedTrainer`` converts the training set to arrays once, builds a ``kind: hogwild``
spec (``num_processes`` workers per node, the optimizer's class and lr, the scheduler), runs it
with :func:`raynn.hogwild.runner.run` under ``root_dir`` and loads the server's final weights
back into ``model``. ``DistributedTester`` evaluates ``model`` on the loader's data with the
same preprocessing the trainer used (stored on the model as ``raynn_preprocess``).

Limits: the loss is cross-entropy (other criteria are refused); an optimizer or scheduler
*object* is rebuilt for every worker from its class and settings.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raynn.data import ArrayDataset
from raynn.errors import RaynnError
from raynn.hogwild.shared_params import load_flat
from raynn.hogwild.spec import HogwildSpec, hogwild_spec_from_dict
from raynn.optim import LRSchedule
from raynn.results import write_json
from raynn.spec import Component, OptimizerSpec


def _image_array(image: Any) -> np.ndarray:
    """One image (tensor CHW / HW, PIL image or array HWC / HW) as a float array CHW."""
    if isinstance(image, torch.Tensor):
        arr = image.detach().cpu().numpy()
        return arr[None] if arr.ndim == 2 else arr
    arr = np.asarray(image)
    if arr.ndim == 2:
        return arr[None]
    return arr.transpose(2, 0, 1)


def _scale_of(x: np.ndarray) -> tuple[float, float]:
    """The value range mapped onto 0..255: uint8 as is, [0, 1] floats, else min..max."""
    if x.dtype == np.uint8:
        return 0.0, 255.0
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    return lo, hi if hi > lo else lo + 1.0


def _to_uint8(x: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    lo, hi = scale
    if x.dtype == np.uint8 and scale == (0.0, 255.0):
        return np.ascontiguousarray(x)
    out = (x.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def dataset_arrays(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """A torch Dataset of ``(image, label)`` pairs as ``(images NCHW, labels int64)`` arrays.

    Datasets with ``data`` and ``targets`` arrays (torchvision's) are read directly, without
    per-sample ``__getitem__`` (their transforms are not applied: raynn normalises itself).
    """
    data, targets = getattr(dataset, "data", None), getattr(dataset, "targets", None)
    if data is not None and targets is not None and len(data) == len(targets):
        x = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        y = targets.numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
        return x, y.astype(np.int64)
    xs, ys = [], []
    for i in range(len(dataset)):
        image, label = dataset[i]
        xs.append(_image_array(image))
        ys.append(int(label))
    if not xs:
        raise RaynnError("the training dataset is empty; pass a dataset with samples")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _loader_arrays(loader: Any) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for batch in loader:
        x, y = batch[0], batch[1]
        xs.append(np.stack([_image_array(img) for img in x]))
        ys.append(np.asarray(y.numpy() if isinstance(y, torch.Tensor) else y, dtype=np.int64))
    if not xs:
        raise RaynnError("the test loader yields no batches; pass a loader over test data")
    return np.concatenate(xs), np.concatenate(ys)


def _model_factory(model: Any) -> tuple[nn.Module, Callable[..., nn.Module]]:
    if isinstance(model, nn.Module):
        instance = model
    elif callable(model):
        instance = model()
    else:
        raise RaynnError(f"model must be an nn.Module or a factory of one, got {model!r}")

    def factory(in_shape: Any = None, num_classes: Any = None, **_: Any) -> nn.Module:
        return copy.deepcopy(instance)

    return instance, factory


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
        criterion: the loss; cross-entropy only.
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
        if criterion is not None and not isinstance(criterion, nn.CrossEntropyLoss):
            raise RaynnError(
                f"criterion {type(criterion).__name__} is not supported; HOGWILD trains with "
                "nn.CrossEntropyLoss"
            )
        self.num_processes = num_processes
        self.root_dir = str(root_dir)
        self.batch_size = batch_size
        self.spec_overrides = spec_overrides
        self.result: Any = None
        self.spec: HogwildSpec | None = None

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

        instance, factory = _model_factory(model)
        x, y = dataset_arrays(train_dataset)
        scale = _scale_of(x)
        x8 = _to_uint8(x, scale)
        classes = int(y.max()) + 1 if len(y) else 0
        data = ArrayDataset("seed_dataset", x8, y, None, None, num_classes=max(classes, 2))
        raw: dict[str, Any] = {
            "kind": "hogwild",
            "name": "distributed_trainer",
            "training": {"epochs": epochs, "batch_size": self.batch_size},
            "hogwild": {"workers_per_node": self.num_processes},
            "output": {"dir": self.root_dir},
        }
        for key, value in self.spec_overrides.items():
            merged = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
            raw[key] = merged
        base = hogwild_spec_from_dict(raw)
        spec = dataclasses.replace(
            base,
            model=Component(type(instance).__name__, factory=factory),
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
        instance.raynn_preprocess = {
            "scale": list(scale),
            "mean": list(data.mean),
            "std": list(data.std),
        }
        return self.result


class DistributedTester:
    """Evaluates a trained model on a test loader and writes the result under ``root_dir``.

    Args:
        test_loader: yields ``(images, labels)`` batches (tensors, PIL images or arrays).
        root_dir: where ``test_results.json`` is written.
    """

    def __init__(self, test_loader: Any, root_dir: str) -> None:
        self.test_loader = test_loader
        self.root_dir = Path(root_dir)

    def __call__(self, model: nn.Module, batch_size: int = 1024) -> dict[str, Any]:
        """Loss, accuracy and per-class accuracy of ``model``; also written to JSON."""
        from raynn.data import Normalizer
        from raynn.training import evaluate

        x, y = _loader_arrays(self.test_loader)
        pre = getattr(model, "raynn_preprocess", None)
        if pre is not None:
            x8 = _to_uint8(x, tuple(pre["scale"]))
            norm = Normalizer(tuple(pre["mean"]), tuple(pre["std"]))
        else:  # not trained by DistributedTrainer: feed the loader's values as they are
            x8 = _to_uint8(x, (0.0, 255.0)) if x.dtype == np.uint8 else None
            norm = Normalizer((0.0,), (1.0 / 255.0,))  # the identity
        classes = max(int(y.max()) + 1, 2)
        if x8 is None:
            model.eval()
            with torch.no_grad():
                logits = model(torch.from_numpy(x.astype(np.float32)))
            loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(y)))
            hits = logits.argmax(1).numpy() == y
            per_class = [
                float(hits[y == c].mean()) if (y == c).any() else math.nan for c in range(classes)
            ]
            result = {"loss": loss, "accuracy": float(hits.mean()), "per_class_accuracy": per_class}
        else:
            ev = evaluate(model, x8, y, None, norm, classes, batch_size)
            result = {"loss": ev.loss, "accuracy": ev.accuracy, "per_class_accuracy": ev.per_class}
        result.update({"samples": int(len(y)), "time": time.time()})
        write_json(self.root_dir / "test_results.json", result)
        return json.loads(json.dumps(result))


__all__ = ["DistributedTester", "DistributedTrainer", "dataset_arrays"]
