"""The ``kind: hogwild`` spec: one model trained by asynchronous, lock-free SGD.

Same rules as the K-fold spec (:mod:`raynn.spec`): frozen dataclasses validated in
``__post_init__``, unknown keys and bad values fail with the key and the fix, and names are
looked up in the registries. Layout (every section optional)::

    kind: hogwild
    name: hogwild_digits
    seed: 0
    dataset:   {name: digits}                       # raynn.spec.DatasetSpec
    model:     mlp                                  # one name, or {name, args}
    optimizer: {name: sgd, lr: 0.02, momentum: 0.9} # raynn.spec.OptimizerSpec, per worker
    scheduler: cosine                               # optional, per worker, stepped per epoch
    training:  {epochs: 20, batch_size: 32, eval_every_seconds: 1.0, loss: cross_entropy}
    hogwild:   {workers_per_node: auto, push_every: 20, pull_every: 20,
                max_staleness: null, staleness_lr: false, max_restarts: 3}
    output:    {dir: runs}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from raynn.core.registry import MODELS, SCHEDULERS
from raynn.errors import SpecError
from raynn.spec.builder import SpecKind, build
from raynn.spec.checks import (
    Component,
    check_bool,
    check_non_negative_int,
    check_positive_int,
    check_positive_number,
    check_seed,
    components,
    fail,
    short_repr,
    to_plain,
)
from raynn.spec.search import refuse_space
from raynn.spec.sections import DatasetSpec, OptimizerSpec, OutputSpec, check_run_name


@dataclass(frozen=True)
class HogwildTrainingSpec:
    """How long and how each worker trains, and how often the global weights are evaluated.

    ``epochs`` are passes over the training data by all workers together: each epoch the
    (shuffled) training set is partitioned across the workers. ``batch_size`` is per step of
    one worker. ``loss`` is the training loss, as for K-fold (``cross_entropy`` with
    ``label_smoothing``/``weight``, ``nll``, or ``pkg.mod:factory``; :mod:`raynn.core.losses`);
    the evaluation of the global weights reports the same criterion.
    """

    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 1024
    eval_every_seconds: float = 1.0
    loss: Component = Component("cross_entropy")

    def __post_init__(self) -> None:
        check_positive_int("training.epochs", self.epochs)
        check_positive_int("training.batch_size", self.batch_size)
        check_positive_int("training.eval_batch_size", self.eval_batch_size)
        check_positive_number("training.eval_every_seconds", self.eval_every_seconds)
        from raynn.core.losses import loss_component  # torch: imported when a spec is made

        object.__setattr__(self, "loss", loss_component("training.loss", self.loss))


@dataclass(frozen=True)
class HogwildProtocolSpec:
    """The HOGWILD protocol (docs/HOGWILD.md).

    Attributes:
        workers_per_node: worker actors per node, each pinned to one core; ``auto`` = one per
            usable core of the node.
        push_every: node steps (all of a node's workers together) between pushes of the
            node's update to the parameter server.
        pull_every: node steps between pulls of the global weights without a push; 0 pulls
            only with each push.
        max_staleness: stale-synchronous bound: a push that would leave another node more than
            this many versions behind waits (and its node pauses); null = fully asynchronous.
        staleness_lr: scale each pushed update by ``1 / max(1, staleness)``.
        server_shards: split the flat weight vector over this many server actors.
        checkpoint_seconds: how often the server checkpoints its weights (0 = never).
        sample_interval: seconds between CPU utilisation samples.
        max_restarts: how often a run re-plans its workers after one died (an actor killed,
            a node lost) and carries on from the server's current weights; 0 fails the run.
    """

    workers_per_node: int | str = "auto"
    push_every: int = 20
    pull_every: int = 0
    max_staleness: int | None = None
    staleness_lr: bool = False
    server_shards: int = 1
    checkpoint_seconds: float = 2.0
    sample_interval: float = 0.5
    max_restarts: int = 3

    def __post_init__(self) -> None:
        wpn = self.workers_per_node
        if wpn != "auto" and (isinstance(wpn, bool) or not isinstance(wpn, int) or wpn < 1):
            raise fail(
                "hogwild.workers_per_node",
                f"must be a positive integer or 'auto', got {short_repr(wpn)}",
                "use 1, 2, ... or auto (one per core)",
            )
        check_positive_int("hogwild.push_every", self.push_every)
        check_non_negative_int("hogwild.pull_every", self.pull_every)
        if self.max_staleness is not None:
            check_non_negative_int("hogwild.max_staleness", self.max_staleness)
        check_bool("hogwild.staleness_lr", self.staleness_lr)
        check_positive_int("hogwild.server_shards", self.server_shards)
        ok = isinstance(self.checkpoint_seconds, (int, float)) and not isinstance(
            self.checkpoint_seconds, bool
        )
        if not ok or self.checkpoint_seconds < 0:
            raise fail(
                "hogwild.checkpoint_seconds",
                f"must be a number >= 0, got {short_repr(self.checkpoint_seconds)}",
                "use e.g. 2 (0 turns server checkpoints off)",
            )
        check_positive_number("hogwild.sample_interval", self.sample_interval)
        check_non_negative_int("hogwild.max_restarts", self.max_restarts)


@dataclass(frozen=True)
class HogwildSpec:
    """Asynchronous data-parallel SGD of one model on every core of every node."""

    name: str = "hogwild"
    kind: str = "hogwild"
    seed: int = 0
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    model: Component = field(default_factory=lambda: Component("mlp"))
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    scheduler: Component = field(default_factory=lambda: Component("none"))
    training: HogwildTrainingSpec = field(default_factory=HogwildTrainingSpec)
    hogwild: HogwildProtocolSpec = field(default_factory=HogwildProtocolSpec)
    output: OutputSpec = field(default_factory=OutputSpec)

    def __post_init__(self) -> None:
        if self.kind != "hogwild":
            raise fail(
                "kind", f"expected 'hogwild', got {short_repr(self.kind)}", "set kind: hogwild"
            )
        check_run_name(self.name)
        check_seed("seed", self.seed)
        object.__setattr__(self, "model", _one("model", MODELS, self.model))
        object.__setattr__(self, "scheduler", _one("scheduler", SCHEDULERS, self.scheduler))

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-able dict that :func:`hogwild_spec_from_dict` turns back into this."""
        return to_plain(self)


def _one(key: str, registry: Any, value: Any) -> Component:
    if value is None:
        raise fail(key, "is empty", f"name one {registry.kind}, e.g. {registry.names()[0]}")
    if isinstance(value, (list, tuple)) and len(value) != 1:
        raise fail(
            key,
            f"HOGWILD trains exactly one {registry.kind}, got {len(value)}",
            f"name a single {registry.kind}",
        )
    try:
        return components(key, registry, value)[0]
    except SpecError as exc:  # one entry: name the key, not its list index
        raise SpecError(str(exc).replace(f"'{key}[0]", f"'{key}")) from None


HOGWILD = SpecKind(
    HogwildSpec,
    sections={
        "dataset": DatasetSpec,
        "optimizer": OptimizerSpec,
        "training": HogwildTrainingSpec,
        "hogwild": HogwildProtocolSpec,
        "output": OutputSpec,
    },
    entries={
        "model": "name one entry (or leave the key out)",
        "scheduler": "name one entry (or leave the key out)",
    },
    prepare=refuse_space,
)


def hogwild_spec_from_dict(raw: Mapping[str, Any]) -> HogwildSpec:
    """Build a validated :class:`HogwildSpec` from a plain mapping (a parsed YAML/JSON spec).

    Raises:
        SpecError: unknown keys (all at once), a bad value or an unknown name, naming the key
            and the fix.
    """
    return build(HOGWILD, raw)
