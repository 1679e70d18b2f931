"""Optimizers and learning-rate schedules, by name, and the one factory of each.

A schedule is wrapped in :class:`LRSchedule` so the training loop steps every kind the same
way: per batch (``onecycle``), per epoch (``cosine``, ``warm``, ``step``) or on the validation
loss (``reduce``). :func:`make_optimizer` and :func:`make_schedule` build them from what a
K-fold job (:class:`raynn.kfold.grid.Job`) or a HOGWILD spec says: both kinds train with these.
The built-ins register themselves in :data:`raynn.core.registry.OPTIMIZERS` and
:data:`raynn.core.registry.SCHEDULERS` on import.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from raynn.core.registry import OPTIMIZERS as OPTIMIZER_REGISTRY
from raynn.core.registry import SCHEDULERS as SCHEDULER_REGISTRY


def sgd(
    params: Iterable[nn.Parameter],
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    **_: Any,
) -> torch.optim.Optimizer:
    """Stochastic gradient descent with optional (Nesterov) momentum and weight decay."""
    return torch.optim.SGD(
        params,
        lr=lr,
        momentum=momentum,
        nesterov=nesterov and momentum > 0,
        weight_decay=weight_decay,
    )


def adam(
    params: Iterable[nn.Parameter],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    **_: Any,
) -> torch.optim.Optimizer:
    """Adam."""
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def adamw(
    params: Iterable[nn.Parameter],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.01,
    **_: Any,
) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay)."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": sgd,
    "adam": adam,
    "adamw": adamw,
}


class LRSchedule:
    """A learning-rate scheduler plus when to step it: ``batch``, ``epoch`` or ``metric``."""

    def __init__(self, scheduler: Any | None, step_on: str = "epoch") -> None:
        self.scheduler = scheduler
        self.step_on = step_on

    def after_batch(self) -> None:
        """Call after every optimizer step."""
        if self.scheduler is not None and self.step_on == "batch":
            self.scheduler.step()

    def after_epoch(self, val_loss: float) -> None:
        """Call once per epoch, after validation."""
        if self.scheduler is None:
            return
        if self.step_on == "epoch":
            self.scheduler.step()
        elif self.step_on == "metric":
            self.scheduler.step(val_loss)

    def skip(self, steps_per_epoch: Sequence[int]) -> None:
        """Advance as if epochs of ``steps_per_epoch[i]`` batches had run (resuming a run).

        Metric-driven schedules (``reduce``) cannot be replayed without the losses and stay
        where they are.
        """
        if self.scheduler is None or self.step_on == "metric":
            return
        with warnings.catch_warnings():  # "step() before optimizer.step()": on purpose here
            warnings.simplefilter("ignore", UserWarning)
            for steps in steps_per_epoch:
                for _ in range(steps if self.step_on == "batch" else 1):
                    self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scheduler is None else self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)


ScheduleFactory = Callable[..., LRSchedule]


def cosine(opt: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, **kw: Any) -> LRSchedule:
    """Cosine annealing from the optimizer's lr to ``eta_min`` over all epochs."""
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=kw.get("t_max", epochs), eta_min=kw.get("eta_min", 0.0)
    )
    return LRSchedule(sched)


def warm(opt: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, **kw: Any) -> LRSchedule:
    """Cosine annealing with warm restarts every ``t_0`` epochs (default: a third of them)."""
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt,
        T_0=kw.get("t_0", max(1, epochs // 3)),
        T_mult=kw.get("t_mult", 1),
        eta_min=kw.get("eta_min", 0.0),
    )
    return LRSchedule(sched)


def step(opt: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, **kw: Any) -> LRSchedule:
    """Multiply the lr by ``gamma`` every ``step_size`` epochs (default: a third of them)."""
    sched = torch.optim.lr_scheduler.StepLR(
        opt, step_size=kw.get("step_size", max(1, epochs // 3)), gamma=kw.get("gamma", 0.1)
    )
    return LRSchedule(sched)


def reduce(opt: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, **kw: Any) -> LRSchedule:
    """Halve the lr when the validation loss stops improving for ``patience`` epochs."""
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=kw.get("factor", 0.5), patience=kw.get("patience", 2)
    )
    return LRSchedule(sched, step_on="metric")


def onecycle(
    opt: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, **kw: Any
) -> LRSchedule:
    """One-cycle policy, stepped per batch, peaking at the optimizer's lr (or ``max_lr``)."""
    max_lr = kw.get("max_lr", opt.param_groups[0]["lr"])
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=max_lr,
        total_steps=epochs * steps_per_epoch,
        pct_start=kw.get("pct_start", 0.3),
    )
    return LRSchedule(sched, step_on="batch")


def none(opt: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, **kw: Any) -> LRSchedule:
    """A constant learning rate."""
    return LRSchedule(None)


SCHEDULERS: dict[str, ScheduleFactory] = {
    "cosine": cosine,
    "warm": warm,
    "step": step,
    "reduce": reduce,
    "onecycle": onecycle,
    "none": none,
}
OPTIMIZER_REGISTRY.add_builtins(OPTIMIZERS)
SCHEDULER_REGISTRY.add_builtins(SCHEDULERS)


class TrainsOneModel(Protocol):
    """What the factories read: a K-fold :class:`raynn.kfold.grid.Job` or a
    :class:`raynn.spec.hogwild.HogwildSpec` (``optimizer``: an ``OptimizerSpec``,
    ``scheduler``: a ``Component``, ``training.epochs``)."""

    optimizer: Any
    scheduler: Any
    training: Any


def make_optimizer(run: TrainsOneModel, model: nn.Module) -> torch.optim.Optimizer:
    """``run``'s optimizer over ``model`` (each job, each HOGWILD worker its own state).

    A Python ``optimizer.factory`` is called as ``factory(model)`` (with ``factory_lr``, its
    param groups then take ``optimizer.lr``); a registered name as
    ``factory(model.parameters(), **optimizer.kwargs())``.
    """
    if run.optimizer.factory is not None:
        opt = run.optimizer.factory(model)
        if run.optimizer.factory_lr:  # a swept lr wins over the factory's own
            for group in opt.param_groups:
                group["lr"] = run.optimizer.lr
        return opt
    factory = OPTIMIZER_REGISTRY.get(run.optimizer.name, key="optimizer.name")
    return factory(model.parameters(), **run.optimizer.kwargs())


def make_schedule(
    run: TrainsOneModel,
    opt: torch.optim.Optimizer,
    steps_per_epoch: int,
    *,
    key: str = "scheduler",
) -> LRSchedule:
    """``run``'s learning-rate schedule over ``training.epochs`` epochs of ``steps_per_epoch``
    optimizer steps (at least 1); ``key`` names the spec key in an unknown-name error."""
    comp = run.scheduler
    factory = comp.factory or SCHEDULER_REGISTRY.get(comp.name, key=key)
    sched = factory(opt, run.training.epochs, max(1, steps_per_epoch), **dict(comp.args))
    return sched if isinstance(sched, LRSchedule) else LRSchedule(sched)
