"""raynn's built-in models, datasets, losses, optimizers and schedules, in the registries.

:mod:`raynn.core.data`, :mod:`raynn.core.losses` and :mod:`raynn.core.optim` register their
own built-ins when imported; the models (:mod:`raynn.core.models`, plain factories) are
registered here. :func:`ensure_builtins` imports them all, and importing this module makes it
every registry's fill hook (:meth:`raynn.core.registry.Registry.fill_with`), so the first
read of any table fills them (torch is imported then, not when the spec module is).
"""

from __future__ import annotations

from raynn.core.registry import ALL, MODELS

_done = False


def ensure_builtins() -> None:
    """Register every built-in (once; a name registered before keeps its entry)."""
    global _done
    if _done:
        return
    from raynn.core import data, losses, optim  # noqa: F401 - each registers its own on import
    from raynn.core.models import MODEL_FACTORIES

    MODELS.add_builtins(MODEL_FACTORIES)
    _done = True


for _registry in ALL:
    _registry.fill_with(ensure_builtins)

__all__ = ["ensure_builtins"]
