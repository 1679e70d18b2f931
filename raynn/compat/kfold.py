"""The seed project's K-fold API on raynn: ``AsyncKFold`` (the face is :mod:`raynn.compat`).

Usage, as in the original project (``examples/`` has the five scripts)::

    from raynn.compat import AsyncKFold, DistributedTester, DistributedTrainer

    kfold = AsyncKFold(2, train_dataset, root_dir, CrossEntropyLoss(), batch_size)
    results = kfold([MobileNet, LeNet, VGG], ["cosine", "warm"], get_optimizer,
                    {"epochs": 2, "save_checkpoint_frequency": 1})

    trainer = DistributedTrainer(num_processes, CrossEntropyLoss(), root_dir, batch_size)
    trainer(model, train_dataset, optimizer, scheduler, epochs=epochs)
    DistributedTester(DataLoader(test_dataset, batch_size=batch_size), root_dir)(model)

Datasets may yield uint8 arrays, PIL images, ``ToTensor()`` or normalised floats: they are
converted once by :func:`raynn.compat.data.convert_dataset`, which records the exact map from
their values to the network's inputs (``AsyncKFold.input_mapping``; a model trained by
``DistributedTrainer`` applies it itself, so ``model(x)`` takes the dataset's own tensors).
Models may be classes or factories (called with ``num_classes=`` when they accept it, else
with no arguments), raynn model names, or ``nn.Module`` instances (deep-copied per job, their
current weights the start). Schedulers are raynn scheduler names; ``get_optimizer(model)``
returns a torch optimizer. The jobs run on raynn's pinned core groups (``executor="ray"``) or
one at a time (``executor="serial"``); the result is a pandas DataFrame, one row per job
(cross-validation scores; the fold models are not kept).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from raynn.compat.data import (
    attach_input_mapping,
    convert_dataset,
    model_component,
)
from raynn.core.data import ArrayDataset
from raynn.errors import SpecError
from raynn.spec import Component, KFoldOutputSpec


def arrays_from_dataset(dataset: Any, name: str = "custom") -> ArrayDataset:
    """A torch-style dataset of ``(image, label)`` pairs as raynn's uint8 arrays, once.

    The arrays of :func:`raynn.compat.data.convert_dataset` (which also returns the mapping
    from the dataset's values to the network's inputs).
    """
    return convert_dataset(dataset, name)[0]


def _as_list(models: Any) -> list[Any]:
    """``models`` as a list: one model (a name, class, factory or instance) becomes a list."""
    if isinstance(models, (str, nn.Module)) or callable(models):
        return [models]
    return list(models)


def _unique_labels(components: list[Component]) -> tuple[Component, ...]:
    """The model entries, a repeated label (two instances of one class) numbered ``-2``, ..."""
    seen: dict[str, int] = {}
    out = []
    for comp in components:
        n = seen[comp.label] = seen.get(comp.label, 0) + 1
        out.append(comp if n == 1 else dataclasses.replace(comp, label=f"{comp.label}-{n}"))
    return tuple(out)


# the original project's trainer_params keys. save_checkpoint_frequency: epochs between
# checkpoints (training.checkpoint_epochs; 0: none). print_frequency: 0 turns raynn's live
# progress view off, any other value shows it (it redraws at every epoch end of every job,
# the only cadence it has); progress: the same switch by name.
TRAINER_PARAMS = ("epochs", "save_checkpoint_frequency", "print_frequency", "progress")


def _trainer_params(params: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The ``training`` settings and the progress switch of the seed's ``trainer_params``."""
    unknown = sorted(set(params) - set(TRAINER_PARAMS), key=str)
    if unknown:
        raise SpecError(
            f"trainer_params: unknown key(s) {', '.join(map(str, unknown))}; valid: "
            f"{', '.join(TRAINER_PARAMS)}"
        )
    for key in ("save_checkpoint_frequency", "print_frequency"):
        value = params.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SpecError(
                f"trainer_params['{key}']: must be a whole number of epochs >= 0, got "
                f"{value!r}; use e.g. 1 (0: {'no checkpoints' if key[0] == 's' else 'quiet'})"
            )
    training: dict[str, Any] = {}
    if "save_checkpoint_frequency" in params:
        every = params["save_checkpoint_frequency"]
        training = {"checkpoint_epochs": every, "checkpoint_seconds": 0.0}
    progress = params.get("progress", True)
    if "print_frequency" in params:
        shown = params["print_frequency"] > 0
        if "progress" in params and bool(params["progress"]) != shown:
            raise SpecError(
                f"trainer_params: print_frequency={params['print_frequency']} and "
                f"progress={params['progress']!r} disagree; give one of them"
            )
        progress = shown
    return training, bool(progress)


class AsyncKFold:
    """K-fold cross-validation of several models x schedulers, run in parallel.

    Args:
        k: number of folds.
        dataset: the training data: a torch dataset of ``(image, label)`` pairs (uint8 arrays,
            PIL images, ``ToTensor()`` or normalised floats; converted once, transforms
            applied, see :mod:`raynn.compat.data`) or an :class:`~raynn.core.data.ArrayDataset`.
            ``input_mapping`` then holds the map from its values to the network's inputs.
        root_dir: where run directories are written.
        criterion: the loss, as ``training.loss`` (:func:`raynn.core.losses.loss_from_criterion`):
            ``nn.CrossEntropyLoss`` (``weight``, ``label_smoothing``), ``nn.NLLLoss`` (a model
            ending in ``log_softmax``), a loss class, instance or factory; else refused.
        batch_size: training batch size.
        executor: ``"ray"`` (pinned core groups) or ``"serial"``.
        seed: the run seed.
        keep_models: ``best`` (default: the folds of the best model x scheduler, for
            :meth:`best_model`), ``all`` or ``none`` (``output.keep_models``).
        refit: retrain the best configuration on all of ``dataset`` after the folds
            (``output.refit``); :meth:`best_model` then returns it.
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
        keep_models: str = "best",
        refit: bool = False,
        **executor_options: Any,
    ) -> None:
        from raynn.core.losses import loss_from_criterion

        self.loss = loss_from_criterion(criterion)  # training.loss; refused here, one line
        self.output = KFoldOutputSpec(dir=str(root_dir), keep_models=keep_models, refit=refit)
        self.k = k
        self.data, self.input_mapping = convert_dataset(dataset)
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
        *,
        lr: float | dict[str, Any] | None = None,
        search: dict[str, Any] | None = None,
    ) -> Any:
        """Run every configuration x fold; returns the job table (a DataFrame).

        Args:
            models: each a model class or factory (called with ``num_classes=`` when it takes
                it, else with no arguments; seeded per job), a raynn model name, or an
                ``nn.Module`` instance (deep-copied for every job: each fold starts from its
                current weights, and the instance is left unchanged).
            schedulers: raynn scheduler names.
            get_optimizer: ``f(model)`` returning a torch optimizer (default: raynn's).
            trainer_params: the seed's keys (``epochs``, ``save_checkpoint_frequency``,
                ``print_frequency``) and ``progress``.
            lr: the learning rate, or a domain to sweep it (``raynn.loguniform(1e-4, 1e-1)``,
                ``raynn.grid([1e-3, 1e-2])``): each value is one more configuration, and it
                is set on the optimizer ``get_optimizer`` returns.
            search: the spec's ``search`` (``{"samples": N, "seed": S}``): how often random
                domains are drawn.
        """
        from raynn.kfold.runner import run

        params = dict(trainer_params or {})
        checkpointing, progress = _trainer_params(params)
        spec = self._spec(models, schedulers, params, checkpointing, lr, search)
        if get_optimizer is not None:
            optimizer = dataclasses.replace(
                spec.optimizer, factory=get_optimizer, factory_lr=lr is not None
            )
            spec = dataclasses.replace(spec, optimizer=optimizer)
        self.last_run = run(
            spec,
            executor=self.executor,
            data=self.data,
            progress=progress,
            **self.executor_options,
        )
        return self.last_run.jobs

    def _spec(
        self, models: Sequence[Any], schedulers: Sequence[str], params: dict[str, Any],
        checkpointing: dict[str, Any], lr: Any, search: dict[str, Any] | None,
    ) -> Any:  # fmt: skip
        """The K-fold spec of one call, built (and checked) as a spec file would be."""
        from raynn.spec import spec_from_dict

        training = {
            "epochs": int(params.get("epochs", 10)),
            "batch_size": self.batch_size,
            "evaluate_test": False,
            "loss": self.loss,
            **checkpointing,
        }
        return spec_from_dict(
            {
                "name": "async_kfold",
                "seed": self.seed,
                "folds": self.k,
                "models": list(_unique_labels([model_component(m) for m in _as_list(models)])),
                "schedulers": list(schedulers),
                "optimizer": {} if lr is None else {"lr": lr},
                "training": training,
                "output": dataclasses.replace(self.output, dir=str(self.root_dir)),
                "search": search,
            }
        )

    def best_model(self, job_id: str | None = None) -> nn.Module:
        """A trained network of the last run, taking your dataset's inputs.

        Args:
            job_id: a job of the run (``keep_models="all"`` keeps every one) or
                ``"refit"``; None: the refit model when ``refit=True``, else the fold of the
                best model x scheduler with the highest validation accuracy.

        Returns:
            The network (eval mode) with :attr:`input_mapping` attached: ``model(x)`` takes
            batches as your ``dataset`` yields its images (stacked, NCHW), mapped exactly as
            training saw them. ``model.raynn_info`` says which job it is and its metrics.
        """
        from raynn.errors import RaynnError
        from raynn.kfold.saved import load_model

        if self.last_run is None:
            raise RaynnError("best_model(): no run yet; call the AsyncKFold first")
        spec = self.last_run.spec
        factories = {m.label: m.factory for m in spec.models if m.factory is not None}
        trained = load_model(self.last_run.run_dir, job_id, factory=factories or None)
        net = trained.net.eval()
        net.raynn_info = trained.info
        return attach_input_mapping(net, self.input_mapping)
