"""The training loss (spec key ``training.loss``): built-ins, user factories, seed criteria.

``training.loss`` is a name or ``{name: ..., args: {...}}``:

* ``cross_entropy`` (default): ``nn.CrossEntropyLoss``; args ``label_smoothing`` (in [0, 1))
  and ``weight`` (one positive number per class).
* ``nll``: ``nn.NLLLoss``, for a model whose output is already log-probabilities (ends in
  ``log_softmax``); arg ``weight``.
* ``pkg.mod:factory``: ``factory(**args)`` returns an ``nn.Module`` called as
  ``loss(logits, targets)`` (targets: class indices) that averages over the batch.

Checks that need no data run when the spec is made (:func:`check_loss`); the rest (the
weight's length against the dataset's classes, what a factory returns) when the data is
known, before any training (:func:`build_loss`). Every job builds its own loss in its own
process from the spec, so the serial and the parallel executors train with the same one.

Evaluation (validation and test loss) reports the same criterion, in eval mode, over the
whole set: the built-ins sum per batch and divide by the total weight of the set, which is
the configured loss of the whole set at once; a factory's loss is the batch-size weighted
mean of its per-batch values.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from raynn.core.registry import LOSSES
from raynn.errors import SpecError
from raynn.spec.checks import Component, component, fail, short_repr

BUILTIN_LOSSES: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("label_smoothing", "weight", "reduction"),
    "nll": ("weight", "reduction"),
}


def _cross_entropy(
    *, label_smoothing: float = 0.0, weight: list[float] | None = None, reduction: str = "mean"
) -> nn.Module:
    w = None if weight is None else torch.tensor(weight, dtype=torch.float32)
    return nn.CrossEntropyLoss(
        weight=w, label_smoothing=float(label_smoothing), reduction=reduction
    )


def _nll(*, weight: list[float] | None = None, reduction: str = "mean") -> nn.Module:
    w = None if weight is None else torch.tensor(weight, dtype=torch.float32)
    return nn.NLLLoss(weight=w, reduction=reduction)


LOSS_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "cross_entropy": _cross_entropy,
    "nll": _nll,
}
LOSSES.add_builtins(LOSS_FACTORIES)

_MEAN_ONLY = (
    "raynn records each batch's mean loss and weighs it by the batch size; use mean "
    "(or leave it out)"
)


def check_loss(key: str, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Check a built-in loss's args without data; returns them normalised (``weight`` as a
    list of floats). Names with ``:`` (user factories) pass their args through unchecked.

    Raises:
        SpecError: an unknown arg or a bad value, naming ``key``.
    """
    if name not in BUILTIN_LOSSES:
        return dict(args)
    valid = BUILTIN_LOSSES[name]
    out = dict(args)
    for arg in out:
        if arg not in valid:
            raise fail(
                f"{key}.args.{arg}",
                f"unknown argument of loss {name}",
                f"valid: {', '.join(a for a in valid)}",
            )
    if "reduction" in out and out["reduction"] != "mean":
        raise fail(
            f"{key}.args.reduction", f"{short_repr(out['reduction'])} is refused", _MEAN_ONLY
        )
    if "label_smoothing" in out:
        value = out["label_smoothing"]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not 0 <= value < 1:
            raise fail(
                f"{key}.args.label_smoothing",
                f"must be a number in [0, 1), got {short_repr(value)}",
                "use e.g. 0.1",
            )
        out["label_smoothing"] = float(value)
    if "weight" in out:
        value = out["weight"]
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        items = list(value) if isinstance(value, (list, tuple)) else None
        ok = bool(items) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
            for v in items or ()
        )
        if not ok:
            raise fail(
                f"{key}.args.weight",
                f"must be a list of positive numbers, one per class, got {short_repr(value)}",
                "use e.g. [1.0, 2.0, ...]",
            )
        out["weight"] = [float(v) for v in items or ()]
    return out


def loss_component(key: str, value: Any) -> Component:
    """The ``training.loss`` entry: a name or ``{name, args}``, checked without data (names,
    arg names and values); raises SpecError naming ``key``."""
    if not isinstance(value, (Component, str, Mapping)):
        raise fail(
            key,
            f"must be a loss name or {{name, args}}, got {short_repr(value)}",
            f"use one of {', '.join(LOSSES.names())} or pkg.mod:factory",
        )
    comp = component(key, value, "cross_entropy")
    if comp.factory is None:
        LOSSES.get(comp.name, key=key)
    args = check_loss(key, comp.name, comp.args)
    return Component(comp.name, args=args, label=comp.label, factory=comp.factory)


class Loss:
    """A built loss: ``module`` trains (batch mean); :meth:`total` evaluates.

    Args:
        module: the loss module, called as ``module(logits, targets)``.
        summed: the same criterion with ``reduction="sum"`` (built-ins), or None.
        weight: the class weights of a built-in, or None.
    """

    def __init__(
        self,
        module: nn.Module,
        summed: nn.Module | None = None,
        weight: torch.Tensor | None = None,
    ) -> None:
        self.module, self.summed, self.weight = module, summed, weight

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.module(logits, target)

    def train(self) -> None:
        """Training mode (the module's own ``train()``)."""
        self.module.train()

    def eval(self) -> None:
        """Eval mode, as evaluation uses it."""
        self.module.eval()
        if self.summed is not None:
            self.summed.eval()

    def total(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
        """``(sum, weight)`` of a batch: the set's loss is ``sum(sums) / sum(weights)``."""
        if self.summed is not None:
            value = float(self.summed(logits, target).item())
            if self.weight is None:
                return value, float(len(target))
            return value, float(self.weight[target].sum().item())
        return float(self.module(logits, target).item()) * len(target), float(len(target))


def build_loss(component: Any, num_classes: int, key: str = "training.loss") -> Loss:
    """The loss of ``component`` (a :class:`raynn.spec.Component`) for ``num_classes``.

    Raises:
        SpecError: a weight of the wrong length, or a factory that fails, returns something
            else than an ``nn.Module``, reduces otherwise than by the mean, or cannot take
            ``(logits, class targets)``.
    """
    name, args = component.name, dict(component.args)
    if component.factory is None and name in BUILTIN_LOSSES:
        weight = args.get("weight")
        if weight is not None and len(weight) != num_classes:
            raise fail(
                f"{key}.args.weight",
                f"{len(weight)} numbers for a dataset of {num_classes} classes",
                "give one positive number per class",
            )
        factory = LOSS_FACTORIES[name]
        module = factory(**args)
        summed = factory(**{**args, "reduction": "sum"})
        return Loss(module, summed, getattr(module, "weight", None))
    factory = component.factory or LOSSES.get(name, key=key)
    shown = ", ".join(f"{k}={short_repr(v)}" for k, v in args.items()) or "no args"
    try:
        module = factory(**args)
    except Exception as exc:  # noqa: BLE001 - user code: one line, not a traceback
        raise fail(
            key,
            f"calling {name} with {shown} failed: {type(exc).__name__}: {str(exc)[:200]}",
            "check the loss args",
        ) from None
    if not isinstance(module, nn.Module):
        raise fail(
            key,
            f"{name} returned {type(module).__name__}, not a torch.nn.Module",
            "return the loss module (e.g. nn.CrossEntropyLoss(...))",
        )
    reduction = getattr(module, "reduction", "mean")
    if reduction != "mean":
        raise fail(key, f"{name} reduces by {short_repr(reduction)}", _MEAN_ONLY)
    logits = torch.zeros(2, num_classes, requires_grad=True)
    target = torch.tensor([0, 1 % num_classes])
    try:
        value = module(logits, target)
        ok = isinstance(value, torch.Tensor) and value.dim() == 0
    except Exception as exc:  # noqa: BLE001
        raise fail(
            key,
            f"{name} cannot take (logits [batch, {num_classes}], class targets [batch]): "
            f"{type(exc).__name__}: {str(exc)[:150]}",
            "use a loss that takes logits and class indices",
        ) from None
    if not ok:
        raise fail(
            key,
            f"{name} returned {type(value).__name__} of shape "
            f"{tuple(getattr(value, 'shape', ()))}, not one number",
            "return the mean over the batch (a 0-dim tensor)",
        )
    return Loss(module)


_NOT_CLASS_TARGETS = (
    "MSELoss",
    "L1Loss",
    "SmoothL1Loss",
    "HuberLoss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "KLDivLoss",
    "PoissonNLLLoss",
    "GaussianNLLLoss",
    "SoftMarginLoss",
    "MultiLabelSoftMarginLoss",
    "MultiLabelMarginLoss",
    "CosineEmbeddingLoss",
    "MarginRankingLoss",
    "HingeEmbeddingLoss",
    "TripletMarginLoss",
    "TripletMarginWithDistanceLoss",
    "CTCLoss",
)


def _class_path(obj: Any) -> str | None:
    """``module:qualname`` of a class or function importable by that name, else None."""
    module, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if not module or module == "__main__" or "<" in qual:
        return None
    return f"{module}:{qual}"


def _torch_criterion(criterion: nn.Module) -> Any:
    kind = "cross_entropy" if isinstance(criterion, nn.CrossEntropyLoss) else "nll"
    cls = type(criterion).__name__
    if criterion.reduction != "mean":
        raise SpecError(
            f"criterion {cls}(reduction={criterion.reduction!r}) is refused: {_MEAN_ONLY}"
        )
    if criterion.ignore_index != -100:
        raise SpecError(
            f"criterion {cls}(ignore_index={criterion.ignore_index}) is refused: every raynn "
            "sample has a class label, so ignore_index would only drop a class from the loss "
            "silently; leave ignore_index at its default"
        )
    args: dict[str, Any] = {}
    if criterion.weight is not None:
        args["weight"] = [float(v) for v in criterion.weight.tolist()]
    if kind == "cross_entropy" and criterion.label_smoothing:
        args["label_smoothing"] = float(criterion.label_smoothing)
    return Component(kind, args=check_loss(f"criterion {cls}", kind, args))


def loss_from_criterion(criterion: Any) -> Any:
    """The ``training.loss`` entry (a :class:`raynn.spec.Component`) for a seed-API criterion.

    * None: cross-entropy.
    * ``nn.CrossEntropyLoss(...)``: ``cross_entropy`` with its ``weight`` and
      ``label_smoothing``; ``nn.NLLLoss(...)``: ``nll`` with its ``weight``. Either one with
      ``ignore_index`` or a ``reduction`` other than the defaults is refused.
    * a loss class (an ``nn.Module`` subclass) or a factory function of no arguments: built
      by each job as ``factory()``; an instance of another ``nn.Module`` loss: each job
      trains with its own deep copy. Both are checked against the data before training.
    * a spec name or mapping (``"nll"``, ``{"name": ..., "args": ...}``) as in a spec file.

    Raises:
        SpecError: anything else, or a torch loss that does not take class-index targets,
            with the reason on one line.
    """
    if criterion is None or isinstance(criterion, (str, Mapping, Component)):
        return loss_component("criterion", "cross_entropy" if criterion is None else criterion)
    if inspect.isclass(criterion) and criterion in (nn.CrossEntropyLoss, nn.NLLLoss):
        criterion = criterion()
    if isinstance(criterion, (nn.CrossEntropyLoss, nn.NLLLoss)):
        return _torch_criterion(criterion)
    cls = criterion if inspect.isclass(criterion) else type(criterion)
    if cls.__name__ in _NOT_CLASS_TARGETS and cls.__module__.startswith("torch."):
        raise SpecError(
            f"criterion {cls.__name__} is refused: it does not take class-index targets, and "
            "raynn trains classifiers on (logits, class index); use nn.CrossEntropyLoss or "
            "nn.NLLLoss (or a loss module of your own)"
        )
    if isinstance(criterion, nn.Module):
        return _module_criterion(criterion)
    if inspect.isclass(criterion):
        return _class_criterion(criterion)
    if callable(criterion):
        return _factory_criterion(criterion)
    raise SpecError(
        f"criterion {short_repr(criterion)} is refused: it is not a loss; pass "
        "nn.CrossEntropyLoss(...), nn.NLLLoss(...), a loss module (class or instance) or a "
        "factory returning one"
    )


def _module_criterion(template: nn.Module) -> Component:
    """A loss module instance: each job trains with its own deep copy of it."""
    label = type(template).__name__.lower()

    def copy_of() -> nn.Module:
        return copy.deepcopy(template)

    return Component(label, label=label, factory=copy_of)


def _class_criterion(criterion: type) -> Component:
    """A loss module class: each job builds its own, ``criterion()``."""
    if not issubclass(criterion, nn.Module):
        raise SpecError(
            f"criterion class {criterion.__name__} is refused: it is not a torch.nn.Module; "
            "pass a loss module class, an instance of one, or a factory returning one"
        )
    path = _class_path(criterion)
    label = criterion.__name__.lower()
    return Component(path or label, label=label, factory=criterion)


def _factory_criterion(criterion: Callable[[], Any]) -> Component:
    """A factory of no arguments returning the loss module; one that takes arguments looks
    like a loss function and is refused."""
    try:
        params = inspect.signature(criterion).parameters.values()
    except (TypeError, ValueError):
        params = ()
    required = [
        p
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    name = getattr(criterion, "__name__", type(criterion).__name__)
    if required:
        takes = ", ".join(p.name for p in required)
        raise SpecError(
            f"criterion {name} is refused: it takes arguments ({takes}), "
            "so it looks like a loss function, not a factory; wrap it in an nn.Module or "
            "pass a factory of no arguments that returns the loss module"
        )
    path = _class_path(criterion)
    return Component(path or name, label=name.lower(), factory=criterion)


__all__ = [
    "BUILTIN_LOSSES",
    "LOSS_FACTORIES",
    "Loss",
    "build_loss",
    "check_loss",
    "loss_component",
    "loss_from_criterion",
]
