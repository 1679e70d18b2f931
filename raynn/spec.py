"""Job specs: YAML/JSON files turned into frozen, validated dataclasses.

Every check that needs no data runs in ``__post_init__``, so a spec object that exists is a
valid one. Checks that need the dataset (folds against the smallest class, the dataset root)
run in :func:`raynn.data.load_dataset` and :func:`raynn.kfold.prepare`, still before any Ray
work starts. Every error names the spec key and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raynn.errors import SpecError
from raynn.registry import DATASETS, LOSSES, MODELS, OPTIMIZERS, SCHEDULERS

SPEC_KINDS = ("kfold", "hogwild")


MAX_SPEC_BYTES = 1 << 20  # a spec file larger than this is refused unread
MAX_SPEC_NODES = 100_000  # values in a spec once YAML aliases are expanded

_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxstring, _SHOW.maxother = 2, 4, 60, 60


def short_repr(value: Any) -> str:
    """``repr(value)``, cut short (at most 80 characters, and bounded work to get there): an
    error message never formats an unbounded value."""
    text = _SHOW.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _key(name: Any) -> str:
    """A key as a message shows it: a short string as is, anything else cut short."""
    return name if isinstance(name, str) and len(name) <= 60 else short_repr(name)


def _fail(key: str, problem: str, fix: str) -> SpecError:
    return SpecError(f"spec key '{key}': {problem}; {fix}")


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(
            key, f"must be a positive integer, got {short_repr(value)}", "set it to 1 or more"
        )


def _positive_number(key: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise _fail(key, f"must be a positive number, got {short_repr(value)}", "set it above 0")


def _non_negative_number(key: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise _fail(key, f"must be a number >= 0, got {short_repr(value)}", "set it to 0 or more")


def _non_negative_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(key, f"must be an integer >= 0, got {short_repr(value)}", "set it to 0 or more")


def _bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _fail(key, f"must be true or false, got {short_repr(value)}", "write true or false")


@dataclass(frozen=True)
class DatasetSpec:
    """Which data to train on.

    ``root`` defaults to ``$RAYNN_DATA`` and then ``./data``. ``shape``, ``num_classes``,
    ``samples`` and ``test_samples`` describe ``synthetic`` data; ``test_fraction`` is the
    held-out test share for datasets without a test split (``digits``); ``limit`` keeps a
    stratified subset of that many training samples.
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

    def __post_init__(self) -> None:
        DATASETS.get(self.name, key="dataset.name")
        _bool("dataset.download", self.download)
        ok = isinstance(self.test_fraction, float) and 0 < self.test_fraction < 1
        if not ok:
            raise _fail(
                "dataset.test_fraction",
                f"must be between 0 and 1, got {short_repr(self.test_fraction)}",
                "use e.g. 0.2",
            )
        if self.limit is not None:
            _positive_int("dataset.limit", self.limit)
        shape = tuple(self.shape) if isinstance(self.shape, (list, tuple)) else ()
        if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise _fail(
                "dataset.shape",
                f"must be [channels, height, width] of positive ints, got {short_repr(self.shape)}",
                "use e.g. [3, 32, 32]",
            )
        object.__setattr__(self, "shape", shape)
        _positive_int("dataset.samples", self.samples)
        _positive_int("dataset.test_samples", self.test_samples)
        _non_negative_number("dataset.noise", self.noise)
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or (self.num_classes < 2)
        ):
            raise _fail(
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
class Component:
    """A model or scheduler entry: a registered name (or ``module:attr``) plus its kwargs.

    From Python, ``factory`` may hold the callable itself (the seed-style API uses this).
    ``label`` names the entry in job ids and tables (default: ``name``).
    """

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    factory: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name.rsplit(":", 1)[-1])


def _components(key: str, registry: Any, value: Any) -> tuple[Component, ...]:
    if isinstance(value, (str, Mapping, Component)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise _fail(
            key, f"must be a non-empty list, got {short_repr(value)}", "list at least one name"
        )
    out: list[Component] = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if isinstance(item, Component):
            comp = item
        elif isinstance(item, str):
            comp = Component(name=item)
        elif isinstance(item, Mapping):
            unknown = set(item) - {"name", "args", "label"}
            if unknown:
                raise _fail(
                    where,
                    f"unknown key(s) {short_repr(sorted(map(str, unknown)))}",
                    "valid keys: name, args, label",
                )
            if not isinstance(item.get("name"), str):
                raise _fail(where, "needs a 'name'", f"e.g. {{name: {registry.names()[0]}}}")
            args = item.get("args") or {}
            if not isinstance(args, Mapping):
                raise _fail(
                    f"{where}.args", f"must be a mapping, got {short_repr(args)}", "use key: value"
                )
            comp = Component(name=item["name"], args=dict(args), label=item.get("label") or "")
        else:
            raise _fail(
                where, f"must be a name or a mapping, got {short_repr(item)}", "write a name"
            )
        if comp.factory is None:
            registry.get(comp.name, key=where)
        out.append(comp)
    labels = [c.label for c in out]
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise _fail(key, f"duplicate entries {dupes}", "give each a distinct 'label'")
    return tuple(out)


@dataclass(frozen=True)
class OptimizerSpec:
    """Optimizer name and hyper-parameters (``momentum``/``nesterov`` apply to ``sgd``)."""

    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    factory: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.factory is None:
            OPTIMIZERS.get(self.name, key="optimizer.name")
        _positive_number("optimizer.lr", self.lr)
        _non_negative_number("optimizer.momentum", self.momentum)
        _non_negative_number("optimizer.weight_decay", self.weight_decay)
        _bool("optimizer.nesterov", self.nesterov)
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else ()
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise _fail(
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


def loss_component(key: str, value: Any) -> Component:
    """The ``training.loss`` entry: a name or ``{name, args}`` (see :mod:`raynn.losses`),
    checked without data (names, arg names and values); raises SpecError naming ``key``."""
    from raynn.losses import check_loss

    if isinstance(value, Component):
        comp = value
    elif isinstance(value, str):
        comp = Component(name=value)
    elif isinstance(value, Mapping):
        unknown = set(value) - {"name", "args", "label"}
        if unknown:
            raise _fail(
                key,
                f"unknown key(s) {short_repr(sorted(map(str, unknown)))}",
                "valid keys: name, args",
            )
        if not isinstance(value.get("name"), str):
            raise _fail(key, "needs a 'name'", "e.g. {name: cross_entropy, args: {}}")
        args = value.get("args") or {}
        if not isinstance(args, Mapping):
            raise _fail(
                f"{key}.args", f"must be a mapping, got {short_repr(args)}", "use key: value"
            )
        comp = Component(name=value["name"], args=dict(args), label=value.get("label") or "")
    else:
        raise _fail(
            key,
            f"must be a loss name or {{name, args}}, got {short_repr(value)}",
            f"use one of {', '.join(LOSSES.names())} or pkg.mod:factory",
        )
    if comp.factory is None:
        LOSSES.get(comp.name, key=key)
    args = check_loss(key, comp.name, comp.args)
    return Component(comp.name, args=args, label=comp.label, factory=comp.factory)


@dataclass(frozen=True)
class TrainingSpec:
    """How each job trains: epochs, batch sizes, loss, test evaluation, checkpoint cadence.

    ``loss``: ``cross_entropy`` (args ``label_smoothing``, ``weight``), ``nll`` (the model
    outputs log-probabilities; arg ``weight``) or ``pkg.mod:factory`` (see
    :mod:`raynn.losses`); validation and test losses report the same criterion.
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
        _positive_int("training.epochs", self.epochs)
        _positive_int("training.batch_size", self.batch_size)
        _positive_int("training.eval_batch_size", self.eval_batch_size)
        _bool("training.evaluate_test", self.evaluate_test)
        _non_negative_number("training.checkpoint_seconds", self.checkpoint_seconds)
        _non_negative_int("training.checkpoint_epochs", self.checkpoint_epochs)
        object.__setattr__(self, "loss", loss_component("training.loss", self.loss))


CoresPerJob = int | str


@dataclass(frozen=True)
class SchedulingSpec:
    """How jobs map onto cores.

    ``cores_per_job``: cores per job for every job, or ``auto``: with the probe, each model
    its own (1, 2 or 4, by simulated makespan; :func:`raynn.scheduler.probe.auto_group_sizes`),
    without it 1 when jobs >= cores, else cores // jobs. ``probe``: time a few training steps
    of each model at 1, 2 and 4 threads before the run, to order jobs longest-first by
    measured cost and to know how far each model profits from more threads.
    ``tail_widening``: when no job is pending, running jobs take over freed cores of their
    node at their next epoch boundary. ``smt``: where a physical core has several hardware
    threads, ``together`` gives a job all of its cores' threads, ``idle`` only the first
    (the others stay idle); core groups never span NUMA nodes either way
    (:mod:`raynn.scheduler.topology`). ``lease_timeout``: seconds a running job may go
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

    def __post_init__(self) -> None:
        if self.cores_per_job != "auto":
            if (
                isinstance(self.cores_per_job, bool)
                or not isinstance(self.cores_per_job, int)
                or (self.cores_per_job < 1)
            ):
                raise _fail(
                    "scheduling.cores_per_job",
                    f"must be a positive integer or 'auto', got {short_repr(self.cores_per_job)}",
                    "use 1, 2, ... or auto",
                )
        _positive_int("scheduling.max_attempts", self.max_attempts)
        if self.max_workers is not None:
            _positive_int("scheduling.max_workers", self.max_workers)
        _positive_number("scheduling.sample_interval", self.sample_interval)
        _bool("scheduling.probe", self.probe)
        _bool("scheduling.tail_widening", self.tail_widening)
        if self.lease_timeout != "auto":
            _positive_number("scheduling.lease_timeout", self.lease_timeout)
        if self.smt not in ("together", "idle"):
            raise _fail(
                "scheduling.smt",
                f"must be together or idle, got {short_repr(self.smt)}",
                "use together",
            )


@dataclass(frozen=True)
class OutputSpec:
    """Where run directories go (``<dir>/<run-id>/``)."""

    dir: str = "runs"

    def __post_init__(self) -> None:
        if not isinstance(self.dir, str) or not self.dir:
            raise _fail(
                "output.dir", f"must be a path, got {short_repr(self.dir)}", "use e.g. runs"
            )


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
            raise _fail(
                "output.keep_models",
                f"must be one of {', '.join(KEEP_MODELS)}, got {short_repr(self.keep_models)}",
                "use best (the best configuration's folds), all or none",
            )
        _bool("output.refit", self.refit)


@dataclass(frozen=True)
class KFoldSpec:
    """K-fold cross-validation: every model x scheduler x fold is one job."""

    name: str = "kfold"
    kind: str = "kfold"
    seed: int = 0
    folds: int = 5
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    models: tuple[Component, ...] = (Component("lenet"),)
    schedulers: tuple[Component, ...] = (Component("cosine"),)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    scheduling: SchedulingSpec = field(default_factory=SchedulingSpec)
    output: KFoldOutputSpec = field(default_factory=KFoldOutputSpec)

    def __post_init__(self) -> None:
        if self.kind != "kfold":
            raise _fail("kind", f"expected 'kfold', got {short_repr(self.kind)}", "set kind: kfold")
        if not isinstance(self.name, str) or not self.name:
            raise _fail(
                "name", f"must be a non-empty string, got {short_repr(self.name)}", "name the run"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise _fail("seed", f"must be an integer, got {short_repr(self.seed)}", "use e.g. 0")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise _fail(
                "folds", f"must be an integer >= 2, got {short_repr(self.folds)}", "use e.g. 5"
            )
        object.__setattr__(self, "models", _components("models", MODELS, self.models))
        object.__setattr__(
            self, "schedulers", _components("schedulers", SCHEDULERS, self.schedulers)
        )

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-able dict that :func:`spec_from_dict` turns back into this spec."""
        return _to_plain(self)


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, Component):
        out: dict[str, Any] = {"name": obj.name}
        if obj.args:
            out["args"] = dict(obj.args)
        if obj.label != obj.name:
            out["label"] = obj.label
        return out
    if dataclasses.is_dataclass(obj):
        return {
            f.name: _to_plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.name != "factory"
        }
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


_SECTIONS: dict[str, type] = {
    "dataset": DatasetSpec,
    "optimizer": OptimizerSpec,
    "training": TrainingSpec,
    "scheduling": SchedulingSpec,
    "output": KFoldOutputSpec,
}


def _section(key: str, cls: type, value: Any) -> Any:
    if value is None:
        return cls()
    if not isinstance(value, Mapping):
        raise _fail(
            key, f"must be a mapping, got {short_repr(value)}", "write key: value pairs under it"
        )
    valid = [f.name for f in dataclasses.fields(cls) if f.name != "factory"]
    for name in value:
        if name not in valid:
            raise _fail(f"{key}.{_key(name)}", "unknown key", f"valid keys: {', '.join(valid)}")
    try:
        return cls(**value)
    except TypeError as exc:  # pragma: no cover - guarded by the key check above
        raise _fail(key, str(exc), "check the section") from None


def spec_from_dict(raw: Mapping[str, Any]) -> Any:
    """Build a validated spec (``KFoldSpec`` or ``HogwildSpec``) from a plain mapping."""
    if not isinstance(raw, Mapping):
        raise SpecError("spec: the top level must be a mapping of keys; see jobs/*.yaml")
    kind = raw.get("kind", "kfold")
    if kind == "hogwild":
        from raynn.hogwild.spec import hogwild_spec_from_dict

        return hogwild_spec_from_dict(raw)
    if kind != "kfold":
        raise _fail("kind", f"unknown kind {short_repr(kind)}", f"valid: {', '.join(SPEC_KINDS)}")
    valid = [f.name for f in dataclasses.fields(KFoldSpec)]
    for name in raw:
        if name not in valid:
            raise _fail(_key(name), "unknown key", f"valid top-level keys: {', '.join(valid)}")
    if "models" not in raw:
        raise _fail(
            "models",
            "is missing",
            f"list the models to train, e.g. [lenet]; valid: {', '.join(MODELS.names())}",
        )
    kwargs = dict(raw)
    for name, cls in _SECTIONS.items():
        kwargs[name] = _section(name, cls, kwargs.get(name))
    for name in ("models", "schedulers"):
        if name in kwargs and kwargs[name] is None:
            raise _fail(name, "is empty", "list at least one name")
    return KFoldSpec(**kwargs)


def load_spec(path: str | os.PathLike[str]) -> Any:
    """Read a YAML or JSON spec file with safe YAML and validate it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}; check the path (see jobs/)") from None
    except OSError as exc:
        raise SpecError(f"cannot read spec file {path}: {exc.strerror}") from None
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(
            f"spec file {path} is {len(text)} bytes, more than a spec needs "
            f"({MAX_SPEC_BYTES}); pass the YAML job spec, not data"
        )
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"spec file {path} is not valid YAML/JSON{where}; fix its syntax") from None
    if raw is None:
        raise SpecError(f"spec file {path} is empty; see jobs/kfold_digits.yaml for an example")
    if not _within(raw, MAX_SPEC_NODES):
        raise SpecError(
            f"spec file {path} expands to more than {MAX_SPEC_NODES} values (YAML aliases "
            "nested in aliases?); write the spec out plainly"
        )
    return spec_from_dict(raw)


def _within(raw: Any, budget: int) -> bool:
    """Whether ``raw`` holds at most ``budget`` values, aliases counted each time they are
    used; stops as soon as the budget is spent, so an alias bomb costs ``budget`` steps."""
    stack = [raw]
    while stack:
        budget -= 1
        if budget < 0:
            return False
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return True
