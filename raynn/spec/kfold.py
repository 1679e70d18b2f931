"""The ``kind: kfold`` spec: every configuration (model x scheduler x searched values) x fold
is one job (:mod:`raynn.spec.search`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raynn.core.registry import MODELS, SCHEDULERS
from raynn.spec.builder import SpecKind
from raynn.spec.checks import Component, check_seed, components, fail, short_repr, to_plain
from raynn.spec.search import SearchSpec, check_space, extract_space, restore_space
from raynn.spec.sections import (
    DatasetSpec,
    KFoldOutputSpec,
    OptimizerSpec,
    SchedulingSpec,
    TrainingSpec,
    check_run_name,
)


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
    search: SearchSpec = field(default_factory=SearchSpec)

    def __post_init__(self) -> None:
        if self.kind != "kfold":
            raise fail("kind", f"expected 'kfold', got {short_repr(self.kind)}", "set kind: kfold")
        check_run_name(self.name)
        check_seed("seed", self.seed)
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise fail(
                "folds", f"must be an integer >= 2, got {short_repr(self.folds)}", "use e.g. 5"
            )
        racing = self.scheduling.racing
        if racing is not None and racing.min_folds > self.folds:
            raise fail(
                "scheduling.racing.min_folds",
                f"{racing.min_folds} is more than folds ({self.folds})",
                "lower min_folds, or raise folds",
            )
        object.__setattr__(self, "models", components("models", MODELS, self.models))
        object.__setattr__(
            self, "schedulers", components("schedulers", SCHEDULERS, self.schedulers)
        )
        check_space(self)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-able dict that :func:`spec_from_dict` turns back into this spec."""
        return restore_space(to_plain(self), self.search)


KFOLD = SpecKind(
    KFoldSpec,
    sections={
        "dataset": DatasetSpec,
        "optimizer": OptimizerSpec,
        "training": TrainingSpec,
        "scheduling": SchedulingSpec,
        "output": KFoldOutputSpec,
        "search": SearchSpec,
    },
    entries={"models": "list at least one name", "schedulers": "list at least one name"},
    required={
        "models": lambda: (
            f"list the models to train, e.g. [lenet]; valid: {', '.join(MODELS.names())}"
        )
    },
    prepare=extract_space,
)
