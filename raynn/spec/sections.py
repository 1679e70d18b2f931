"""The sections every kind of spec shares: dataset, optimizer, K-fold training, scheduling,
output.

Frozen dataclasses checked in ``__post_init__`` (:mod:`raynn.spec.checks`): a section that
exists is a valid one. Names are looked up in the registries (:mod:`raynn.core.registry`; importing
:mod:`raynn.core.builtins` fills them on their first read).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import raynn.core.builtins  # noqa: F401 - every registry is filled on its first read
from raynn.core.registry import DATASETS, OPTIMIZERS
from raynn.spec.checks import (
    Component,
    check_bool,
    check_non_negative_int,
    check_non_negative_number,
    check_positive_int,
    check_positive_number,
    check_seed,
    fail,
    section,
    short_repr,
)

RACING_METRICS = ("val_accuracy", "val_loss")


@dataclass(frozen=True)
class RacingSpec:
    """``scheduling.racing``: race the folds of a grid (:mod:`raynn.kfold.racing`).

    Once a configuration has finished ``min_folds`` folds, a one-sided paired t-test on
    ``metric`` against the best configuration, at ``alpha``, can race it out (with one
    fold, once the race has a pooled spread to test it with).
    """

    metric: str = "val_accuracy"
    alpha: float = 0.05
    min_folds: int = 1

    def __post_init__(self) -> None:
        if self.metric not in RACING_METRICS:
            raise fail(
                "scheduling.racing.metric",
                f"unknown metric {short_repr(self.metric)}",
                f"valid: {', '.join(RACING_METRICS)}",
            )
        if (
            isinstance(self.alpha, bool)
            or not isinstance(self.alpha, int | float)
            or not 0 < self.alpha < 1
        ):
            raise fail(
                "scheduling.racing.alpha",
                f"must be a number between 0 and 1, got {short_repr(self.alpha)}",
                "use e.g. 0.05",
            )
        if (
            isinstance(self.min_folds, bool)
            or not isinstance(self.min_folds, int)
            or (self.min_folds < 1)
        ):
            raise fail(
                "scheduling.racing.min_folds",
                f"must be a positive integer, got {short_repr(self.min_folds)}",
                "use e.g. 1",
            )


@dataclass(frozen=True)
class DatasetSpec:
    """Which data to train on.

    ``root`` defaults to ``$RAYNN_DATA`` and then ``./data``. ``shape``, ``num_classes``,
    ``samples`` and ``test_samples`` describe ``synthetic`` data; ``test_fraction`` is the
    held-out test share for datasets without a test split (``digits``); ``limit`` keeps a
    stratified subset of that many training samples (after the dataset's checks). ``args``:
    keyword arguments of a ``pkg.mod:loader`` (:func:`raynn.core.loaders.call_loader`).
    """

    name: str = "digits"
    root: str | None = None
    download: bool = False
    test_fraction: float = 0.2
    limit: int | None = None
    shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    samples: int = 2000
    test_samples: int = 500
    noise: float = 0.5
    seed: int = 0
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        DATASETS.get(self.name, key="dataset.name")
        args = self.args if self.args is not None else {}
        if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
            raise fail(
                "dataset.args",
                f"must be a mapping of keyword arguments, got {short_repr(self.args)}",
                "use e.g. args: {path: data/mine.npz}",
            )
        object.__setattr__(self, "args", dict(args))
        check_bool("dataset.download", self.download)
        ok = isinstance(self.test_fraction, float) and 0 < self.test_fraction < 1
        if not ok:
            raise fail(
                "dataset.test_fraction",
                f"must be between 0 and 1, got {short_repr(self.test_fraction)}",
                "use e.g. 0.2",
            )
        if self.limit is not None:
            check_positive_int("dataset.limit", self.limit)
        check_seed("dataset.seed", self.seed)
        shape = tuple(self.shape) if isinstance(self.shape, (list, tuple)) else ()
        if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise fail(
                "dataset.shape",
                f"must be [channels, height, width] of positive ints, got {short_repr(self.shape)}",
                "use e.g. [3, 32, 32]",
            )
        object.__setattr__(self, "shape", shape)
        check_positive_int("dataset.samples", self.samples)
        check_positive_int("dataset.test_samples", self.test_samples)
        check_non_negative_number("dataset.noise", self.noise)
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or (self.num_classes < 2)
        ):
            raise fail(
                "dataset.num_classes",
                f"must be an integer >= 2, got {short_repr(self.num_classes)}",
                "set it to 2 or more",
            )

    @property
    def resolved_root(self) -> Path:
        """The root directory: the spec's, else ``$RAYNN_DATA``, else ``./data``."""
        root = self.root or os.environ.get("RAYNN_DATA") or "data"
        return Path(os.path.expanduser(os.path.expandvars(root)))


@dataclass(frozen=True)
class OptimizerSpec:
    """Optimizer name and hyper-parameters (``momentum``/``nesterov`` apply to ``sgd``).

    From Python, ``factory(model)`` may build the optimizer instead; with ``factory_lr`` the
    spec's ``lr`` (a searched one) is then set on every parameter group it returns.
    """

    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    factory: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    # Python only: set ``lr`` on the optimizer ``factory`` returns (AsyncKFold's lr sweep)
    factory_lr: bool = field(default=False, metadata={"spec": False})

    def __post_init__(self) -> None:
        if self.factory is None:
            OPTIMIZERS.get(self.name, key="optimizer.name")
        check_positive_number("optimizer.lr", self.lr)
        check_non_negative_number("optimizer.momentum", self.momentum)
        check_non_negative_number("optimizer.weight_decay", self.weight_decay)
        check_bool("optimizer.nesterov", self.nesterov)
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else ()
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise fail(
                "optimizer.betas",
                f"must be two numbers in [0, 1), got {short_repr(self.betas)}",
                "use e.g. [0.9, 0.999]",
            )
        object.__setattr__(self, "betas", betas)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the optimizer factory."""
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "betas": self.betas,
        }


@dataclass(frozen=True)
class TrainingSpec:
    """How each job trains: epochs, batch sizes, loss, test evaluation, checkpoint cadence.

    ``loss``: ``cross_entropy`` (args ``label_smoothing``, ``weight``), ``nll`` (the model
    outputs log-probabilities; arg ``weight``) or ``pkg.mod:factory`` (see
    :mod:`raynn.core.losses`); validation and test losses report the same criterion.
    ``checkpoint_seconds``: a job saves a checkpoint at the first epoch boundary after this
    many seconds of training since its last one (0 turns checkpoints off). A retry resumes
    from it; a job shorter than this never pays for one. ``checkpoint_epochs``: when above 0,
    a checkpoint every that many epochs instead (``checkpoint_seconds`` is then not used).
    """

    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 1024
    evaluate_test: bool = True
    checkpoint_seconds: float = 30.0
    checkpoint_epochs: int = 0
    loss: Component = Component("cross_entropy")

    def __post_init__(self) -> None:
        check_positive_int("training.epochs", self.epochs)
        check_positive_int("training.batch_size", self.batch_size)
        check_positive_int("training.eval_batch_size", self.eval_batch_size)
        check_bool("training.evaluate_test", self.evaluate_test)
        check_non_negative_number("training.checkpoint_seconds", self.checkpoint_seconds)
        check_non_negative_int("training.checkpoint_epochs", self.checkpoint_epochs)
        from raynn.core.losses import loss_component  # torch: imported when a spec is made

        object.__setattr__(self, "loss", loss_component("training.loss", self.loss))


CoresPerJob = int | str


@dataclass(frozen=True)
class SchedulingSpec:
    """How jobs map onto cores.

    ``cores_per_job``: cores per job for every job, or ``auto``: with the probe, each model
    its own (1, 2 or 4, by simulated makespan; :func:`raynn.kfold.probe.auto_group_sizes`),
    without it 1 when jobs >= cores, else cores // jobs. ``probe``: time a few training steps
    of each model at 1, 2 and 4 threads before the run, to order jobs longest-first by
    measured cost and to know how far each model profits from more threads.
    ``tail_widening``: when no job is pending, running jobs take over freed cores of their
    node at their next epoch boundary. ``smt``: where a physical core has several hardware
    threads, ``together`` gives a job all of its cores' threads, ``idle`` only the first
    (the others stay idle); core groups never span NUMA nodes either way
    (:mod:`raynn.placement.topology`). ``lease_timeout``: seconds a running job may go
    without finishing an epoch before its worker is taken for stuck, killed, and the job
    run again; ``auto``: 10x its model's longest epoch so far (or its probed epoch time),
    at least 60 s, and an hour while nothing is known.
    """

    cores_per_job: CoresPerJob = "auto"
    max_attempts: int = 3
    max_workers: int | None = None
    sample_interval: float = 0.5
    probe: bool = True
    tail_widening: bool = True
    smt: str = "together"
    lease_timeout: float | str = "auto"
    racing: RacingSpec | None = None  # off by default; ``true`` or a mapping turns it on

    def __post_init__(self) -> None:
        if self.cores_per_job != "auto":
            if (
                isinstance(self.cores_per_job, bool)
                or not isinstance(self.cores_per_job, int)
                or (self.cores_per_job < 1)
            ):
                raise fail(
                    "scheduling.cores_per_job",
                    f"must be a positive integer or 'auto', got {short_repr(self.cores_per_job)}",
                    "use 1, 2, ... or auto",
                )
        check_positive_int("scheduling.max_attempts", self.max_attempts)
        if self.max_workers is not None:
            check_positive_int("scheduling.max_workers", self.max_workers)
        check_positive_number("scheduling.sample_interval", self.sample_interval)
        check_bool("scheduling.probe", self.probe)
        check_bool("scheduling.tail_widening", self.tail_widening)
        if self.lease_timeout != "auto":
            check_positive_number("scheduling.lease_timeout", self.lease_timeout)
        if self.smt not in ("together", "idle"):
            raise fail(
                "scheduling.smt",
                f"must be together or idle, got {short_repr(self.smt)}",
                "use together",
            )
        racing = self.racing
        if racing is False or racing is None:
            racing = None
        elif racing is True:
            racing = RacingSpec()
        elif not isinstance(racing, RacingSpec):
            if not isinstance(racing, dict):
                raise fail(
                    "scheduling.racing",
                    f"must be false, true or a mapping, got {short_repr(racing)}",
                    "use racing: {metric: val_accuracy, alpha: 0.05, min_folds: 2}",
                )
            racing = section("scheduling.racing", RacingSpec, racing)
        object.__setattr__(self, "racing", racing)


RUN_NAME_BYTES = 200  # the run directory adds "-YYYYmmdd-HHMMSS-n": within a file name's 255


def check_run_name(name: Any) -> None:
    """Raise :class:`SpecError` unless the spec's ``name`` makes one plain folder name (the
    run directory is ``<output.dir>/<name>-<time>``): a non-empty string, no ``/`` or ``\\``,
    no leading ``.`` (a hidden folder; ``..``), at most :data:`RUN_NAME_BYTES` bytes."""
    if not isinstance(name, str) or not name:
        raise fail("name", f"must be a non-empty string, got {short_repr(name)}", "name the run")
    if "/" in name or "\\" in name or "\0" in name:
        raise fail(
            "name",
            f"must be one folder name, got {short_repr(name)}",
            "drop the slashes (output.dir says where run directories go)",
        )
    if name.startswith("."):
        raise fail(
            "name",
            f"{short_repr(name)} would make a hidden run directory",
            "start it with a letter or digit, e.g. run",
        )
    if len(name.encode()) > RUN_NAME_BYTES:
        raise fail(
            "name",
            f"is too long for a folder name ({len(name.encode())} bytes)",
            f"shorten it to at most {RUN_NAME_BYTES} characters (bytes, in UTF-8)",
        )


@dataclass(frozen=True)
class OutputSpec:
    """Where run directories go (``<dir>/<run-id>/``)."""

    dir: str = "runs"

    def __post_init__(self) -> None:
        if not isinstance(self.dir, str) or not self.dir:
            raise fail("output.dir", f"must be a path, got {short_repr(self.dir)}", "use e.g. runs")


KEEP_MODELS = ("best", "all", "none")


@dataclass(frozen=True)
class KFoldOutputSpec(OutputSpec):
    """Where run directories go, and which trained weights they keep.

    ``keep_models``: ``best`` keeps the final weights of every fold of the best
    configuration (the model x scheduler with the highest mean validation accuracy over its
    folds), ``all`` those of every job, ``none`` (default) none, as before these keys
    existed: weights cost disk (a VGG's are 37 MB a job) and a save per job, so a run keeps
    them when asked. ``refit``: after the folds, train the best configuration once more on
    all training data and keep it as ``models/refit.pt``. Files: ``<run>/models/``;
    :func:`raynn.load_model` rebuilds them.
    """

    keep_models: str = "none"
    refit: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.keep_models not in KEEP_MODELS:
            raise fail(
                "output.keep_models",
                f"must be one of {', '.join(KEEP_MODELS)}, got {short_repr(self.keep_models)}",
                "use best (the best configuration's folds), all or none",
            )
        check_bool("output.refit", self.refit)


__all__ = [
    "KEEP_MODELS",
    "RUN_NAME_BYTES",
    "CoresPerJob",
    "DatasetSpec",
    "KFoldOutputSpec",
    "OptimizerSpec",
    "OutputSpec",
    "SchedulingSpec",
    "TrainingSpec",
    "check_run_name",
]
