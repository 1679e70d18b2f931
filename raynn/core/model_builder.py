"""A model entry built for a dataset's shape: the one place a spec's model becomes a module.

torch is imported when a model is built, not when this module is (the job queue imports it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raynn.core.registry import MODELS
from raynn.errors import SpecError
from raynn.spec.checks import Component, short_repr

if TYPE_CHECKING:
    from torch import nn


def build_model(
    component: Component, in_shape: tuple[int, int, int], num_classes: int
) -> nn.Module:
    """Instantiate a model entry for the given input shape and class count."""
    from torch import nn

    factory = component.factory or MODELS.get(component.name, key="models")
    where = f"spec key 'models' ({component.label})"
    try:
        model = factory(in_shape, num_classes, **dict(component.args))
    except Exception as exc:  # noqa: BLE001 - a user's factory or args: one line, not a traceback
        args = ", ".join(f"{k}={short_repr(v)}" for k, v in component.args.items()) or "no args"
        raise SpecError(
            f"{where}: building {component.name} with {args} failed: {type(exc).__name__}: "
            f"{str(exc)[:200]}; check its args"
        ) from None
    if not isinstance(model, nn.Module):
        raise SpecError(
            f"{where}: the factory of {component.name} returned {type(model).__name__}, not a "
            "torch.nn.Module; return the model"
        )
    return model
