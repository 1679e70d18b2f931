"""Look-up of models, schedulers, optimizers, datasets and losses by name.

A name is either one of the registered built-ins or ``package.module:attr`` pointing at user
code. Unknown names fail with the list of valid ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

from raynn.errors import SpecError


class Registry:
    """A named collection of factories of one kind (``model``, ``scheduler``, ...)."""

    def __init__(self, kind: str, entries: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = dict(entries or {})

    def register(self, name: str, obj: Any) -> None:
        """Add (or replace) the entry ``name``."""
        self._entries[name] = obj

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or (isinstance(name, str) and ":" in name)

    def get(self, name: str, *, key: str | None = None) -> Any:
        """Return the entry ``name``, importing ``package.module:attr`` names.

        Args:
            name: a registered name or ``package.module:attr``.
            key: the spec key the name came from, used in the error message.

        Raises:
            SpecError: the name is unknown or cannot be imported.
        """
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
    try:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise SpecError(f"{where}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


def _model_entries() -> dict[str, Callable[..., Any]]:
    from raynn.models import MODEL_FACTORIES

    return dict(MODEL_FACTORIES)


class _LazyRegistry(Registry):
    """A registry whose built-ins are loaded on first use (models import torch)."""

    def __init__(self, kind: str, loader: Callable[[], dict[str, Any]]) -> None:
        super().__init__(kind)
        self._loader: Callable[[], dict[str, Any]] | None = loader

    def _load(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            self._entries = {**loader(), **self._entries}

    def names(self) -> list[str]:
        self._load()
        return super().names()

    def __contains__(self, name: object) -> bool:
        self._load()
        return super().__contains__(name)

    def get(self, name: str, *, key: str | None = None) -> Any:
        self._load()
        return super().get(name, key=key)


def _optim_entries(attr: str) -> Callable[[], dict[str, Any]]:
    def load() -> dict[str, Any]:
        from raynn import optim

        return dict(getattr(optim, attr))

    return load


def _dataset_entries() -> dict[str, Any]:
    from raynn import data

    return dict(data.LOADERS)


def _loss_entries() -> dict[str, Any]:
    from raynn.losses import LOSS_FACTORIES

    return dict(LOSS_FACTORIES)


MODELS: Registry = _LazyRegistry("model", _model_entries)
SCHEDULERS: Registry = _LazyRegistry("scheduler", _optim_entries("SCHEDULERS"))
OPTIMIZERS: Registry = _LazyRegistry("optimizer", _optim_entries("OPTIMIZERS"))
DATASETS: Registry = _LazyRegistry("dataset", _dataset_entries)
LOSSES: Registry = _LazyRegistry("loss", _loss_entries)


def check_names(registry: Registry, names: Iterable[str], key: str) -> None:
    """Raise :class:`SpecError` for the first unknown name."""
    for name in names:
        registry.get(name, key=key)
