"""Look-up of models, schedulers, optimizers, datasets and losses by name: the mechanism.

A name is either one of the registered built-ins or ``package.module:attr`` pointing at user
code. Unknown names fail with the list of valid ones.

This module imports nothing of raynn but the errors: the built-ins are registered where they
live (:mod:`raynn.core.data` its datasets, :mod:`raynn.core.losses` its losses,
:mod:`raynn.core.optim` its optimizers and schedules, on import), and
:mod:`raynn.core.builtins` sets every table's :meth:`Registry.fill_with` hook, so a table
is filled whenever it is read (the package face, ``raynn/__init__.py``, imports the spec,
which imports :mod:`raynn.core.builtins`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from raynn.errors import SpecError


class Registry:
    """A named collection of factories of one kind (``model``, ``scheduler``, ...)."""

    def __init__(self, kind: str, entries: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = dict(entries or {})
        self._fill: Callable[[], None] | None = None

    def register(self, name: str, obj: Any) -> None:
        """Add (or replace) the entry ``name``."""
        self._entries[name] = obj

    def add_builtins(self, entries: Mapping[str, Any]) -> None:
        """Add built-in entries; a name registered before keeps its entry."""
        for name, obj in entries.items():
            self._entries.setdefault(name, obj)

    def fill_with(self, fill: Callable[[], None]) -> None:
        """Call ``fill()`` once, before the first read (it registers the built-ins)."""
        self._fill = fill

    def _filled(self) -> None:
        if self._fill is not None:
            fill, self._fill = self._fill, None
            fill()

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._filled()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._filled()
        return name in self._entries or (isinstance(name, str) and ":" in name)

    def get(self, name: str, *, key: str | None = None) -> Any:
        """Return the entry ``name``, importing ``package.module:attr`` names.

        Args:
            name: a registered name or ``package.module:attr``.
            key: the spec key the name came from, used in the error message.

        Raises:
            SpecError: the name is unknown or cannot be imported.
        """
        self._filled()
        where = f"spec key '{key}'" if key else f"{self.kind} name"
        if name in self._entries:
            return self._entries[name]
        if ":" in name:
            return _import_attr(name, where)
        raise SpecError(
            f"{where}: unknown {self.kind} {name!r}; valid: {', '.join(self.names())} "
            "(or 'package.module:attr' for your own)"
        )


def _import_attr(path: str, where: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"{where}: cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # the user's module raised while it was imported
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise SpecError(
            f"{where}: importing module {module_name!r} raised {type(exc).__name__}: {first}; "
            "fix the module (--debug shows the traceback)"
        ) from exc
    try:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise SpecError(f"{where}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


MODELS: Registry = Registry("model")
SCHEDULERS: Registry = Registry("scheduler")
OPTIMIZERS: Registry = Registry("optimizer")
DATASETS: Registry = Registry("dataset")
LOSSES: Registry = Registry("loss")
ALL: tuple[Registry, ...] = (MODELS, SCHEDULERS, OPTIMIZERS, DATASETS, LOSSES)


def check_names(registry: Registry, names: Iterable[str], key: str) -> None:
    """Raise :class:`SpecError` for the first unknown name."""
    for name in names:
        registry.get(name, key=key)
