"""The seed project's API on top of raynn: ``AsyncKFold`` (and the HOGWILD trainer/tester).

Usage, as in the original project::

    kfold = AsyncKFold(2, train_dataset, root_dir, CrossEntropyLoss(), batch_size)
    results = kfold([MobileNet, LeNet, VGG], ["cosine", "warm"], get_optimizer,
                    {"epochs": 2, "save_checkpoint_frequency": 1})

Models may be classes (called with ``num_classes=`` when they accept it, else with no
arguments) or raynn model names; schedulers are raynn scheduler names; ``get_optimizer(model)``
returns a torch optimizer. The jobs run on raynn's pinned core groups (``executor="ray"``) or
one at a time (``executor="serial"``); the result is a pandas DataFrame, one row per job.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import nn

from raynn.data import ArrayDataset
from raynn.errors import SpecError
from raynn.spec import Component, KFoldSpec, OptimizerSpec, OutputSpec, TrainingSpec


def arrays_from_dataset(dataset: Any, name: str = "custom") -> ArrayDataset:
    """Turn a torch-style dataset of ``(image, label)`` pairs into raynn's arrays, once.

    Images may be PIL images, HWC/CHW uint8 arrays, or float tensors in [0, 1].
    """
    if isinstance(dataset, ArrayDataset):
        return dataset
    xs, ys = [], []
    for i in range(len(dataset)):
        img, label = dataset[i]
        arr = np.asarray(img.numpy() if hasattr(img, "numpy") else img)
        if arr.dtype != np.uint8:
            arr = np.clip(np.rint(arr.astype(np.float32) * 255), 0, 255).astype(np.uint8)
        if arr.ndim == 2:
            arr = arr[None]
        elif arr.ndim == 3 and arr.shape[-1] in (1, 3) and arr.shape[0] not in (1, 3):
            arr = arr.transpose(2, 0, 1)
        xs.append(arr)
        ys.append(int(label))
    y = np.asarray(ys, dtype=np.int64)
    return ArrayDataset(name, np.stack(xs), y, None, None, num_classes=int(y.max()) + 1)


def _model_component(model: Any) -> Component:
    if isinstance(model, str):
        return Component(model)
    if not callable(model):
        raise SpecError(f"models: {model!r} is neither a raynn model name nor a class/callable")
    label = getattr(model, "__name__", type(model).__name__).lower()

    def factory(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        try:
            params = inspect.signature(model).parameters
        except (TypeError, ValueError):
            params = {}
        return model(num_classes=num_classes) if "num_classes" in params else model()

    return Component(label, label=label, factory=factory)


# the original project's trainer_params keys (print_frequency is accepted and has no effect:
# raynn's progress view replaces its prints)
TRAINER_PARAMS = ("epochs", "save_checkpoint_frequency", "print_frequency", "progress")


class AsyncKFold:
    """K-fold cross-validation of several models x schedulers, run in parallel.

    Args:
        k: number of folds.
        dataset: the training data (torch dataset or :class:`~raynn.data.ArrayDataset`).
        root_dir: where run directories are written.
        criterion: the loss; raynn trains with cross-entropy, so it must be one.
        batch_size: training batch size.
        executor: ``"ray"`` (pinned core groups) or ``"serial"``.
        seed: the run seed.
    """

    def __init__(
        self,
        k: int,
        dataset: Any,
        root_dir: str,
        criterion: Any = None,
        batch_size: int = 64,
        executor: str = "ray",
        seed: int = 0,
        **executor_options: Any,
    ) -> None:
        if criterion is not None and not isinstance(criterion, nn.CrossEntropyLoss):
            raise SpecError(
                f"criterion {type(criterion).__name__} is not supported; raynn "
                "trains classifiers with nn.CrossEntropyLoss"
            )
        self.k = k
        self.data = arrays_from_dataset(dataset)
        self.root_dir = root_dir
        self.batch_size = batch_size
        self.executor = executor
        self.seed = seed
        self.executor_options = executor_options
        self.last_run: Any = None

    def __call__(
        self,
        models: Sequence[Any],
        schedulers: Sequence[str],
        get_optimizer: Callable[[nn.Module], Any] | None = None,
        trainer_params: dict[str, Any] | None = None,
    ) -> Any:
        """Run every model x scheduler x fold; returns the job table (a DataFrame)."""
        from raynn.kfold import run

        params = dict(trainer_params or {})
        unknown = sorted(set(params) - set(TRAINER_PARAMS))
        if unknown:
            raise SpecError(
                f"trainer_params: unknown key(s) {', '.join(map(str, unknown))}; valid: "
                f"{', '.join(TRAINER_PARAMS)}"
            )
        # the seed's epoch cadence: 0 turns checkpoints off, anything else keeps raynn's
        # time-based cadence (training.checkpoint_seconds)
        every = params.get("save_checkpoint_frequency", 1)
        spec = KFoldSpec(
            name="async_kfold",
            seed=self.seed,
            folds=self.k,
            models=tuple(_model_component(m) for m in models),
            schedulers=tuple(schedulers),
            optimizer=OptimizerSpec(factory=get_optimizer) if get_optimizer else OptimizerSpec(),
            training=TrainingSpec(
                epochs=int(params.get("epochs", 10)),
                batch_size=self.batch_size,
                evaluate_test=False,
                checkpoint_seconds=TrainingSpec.checkpoint_seconds if int(every) else 0.0,
            ),
            output=OutputSpec(dir=str(self.root_dir)),
        )
        self.last_run = run(
            spec,
            executor=self.executor,
            data=self.data,
            progress=params.get("progress", True),
            **self.executor_options,
        )
        return self.last_run.jobs


__all__ = ["AsyncKFold", "arrays_from_dataset"]
