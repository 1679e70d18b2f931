"""The checks every spec section shares: one message shape, one way to read each kind of value.

Every error names the spec key and the fix: ``spec key 'training.epochs': must be a positive
integer, got 0; set it to 1 or more``. :class:`Component` (a registered name plus its args)
lives here too, with :func:`components` that reads a list of them, :func:`section` that turns
a mapping into a section's dataclass, and :func:`to_plain` that turns a spec back into plain
data. Used by :mod:`raynn.spec.sections`, :mod:`raynn.spec`, :mod:`raynn.spec.hogwild` and
:mod:`raynn.core.losses`; imports nothing of raynn but the errors.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from raynn.errors import SpecError

_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxstring, _SHOW.maxother = 2, 4, 60, 60


def short_repr(value: Any) -> str:
    """``repr(value)``, cut short (at most 80 characters, and bounded work to get there): an
    error message never formats an unbounded value."""
    text = _SHOW.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def key_name(name: Any) -> str:
    """A key as a message shows it: a short string as is, anything else cut short."""
    return name if isinstance(name, str) and len(name) <= 60 else short_repr(name)


def fail(key: str, problem: str, fix: str) -> SpecError:
    """The error for spec key ``key``: ``spec key '<key>': <problem>; <fix>``."""
    return SpecError(f"spec key '{key}': {problem}; {fix}")


def check_positive_int(key: str, value: Any) -> None:
    """Raise :class:`SpecError` unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(
            key, f"must be a positive integer, got {short_repr(value)}", "set it to 1 or more"
        )


def check_positive_number(key: str, value: Any) -> None:
    """Raise :class:`SpecError` unless ``value`` is a finite number > 0."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise fail(key, f"must be a positive number, got {short_repr(value)}", "set it above 0")


def check_non_negative_number(key: str, value: Any) -> None:
    """Raise :class:`SpecError` unless ``value`` is a finite number >= 0."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise fail(key, f"must be a number >= 0, got {short_repr(value)}", "set it to 0 or more")


def check_non_negative_int(key: str, value: Any) -> None:
    """Raise :class:`SpecError` unless ``value`` is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise fail(key, f"must be an integer >= 0, got {short_repr(value)}", "set it to 0 or more")


SEED_MAX = 2**32 - 1  # numpy's RandomState (folds, splits) takes seeds 0..2**32 - 1


def check_seed(key: str, value: Any) -> None:
    """Raise :class:`SpecError` unless ``value`` is an integer seed from 0 to :data:`SEED_MAX`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise fail(
            key, f"must be an integer from 0 to 2**32 - 1, got {short_repr(value)}", "use e.g. 0"
        )


def check_bool(key: str, value: Any) -> None:
    """Raise :class:`SpecError` unless ``value`` is true or false."""
    if not isinstance(value, bool):
        raise fail(key, f"must be true or false, got {short_repr(value)}", "write true or false")


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


def component(where: str, item: Any, example: str, what: str = "a name or a mapping") -> Component:
    """One entry (a name, ``{name, args, label}`` or a :class:`Component`) as a
    :class:`Component`, not yet looked up; ``example`` names a valid entry, ``what`` what
    an entry may be.

    Raises:
        SpecError: an unknown key, no name, args that are not a mapping, or another type.
    """
    if isinstance(item, Component):
        return item
    if isinstance(item, str):
        return Component(name=item)
    if not isinstance(item, Mapping):
        raise fail(where, f"must be {what}, got {short_repr(item)}", f"write e.g. {example}")
    unknown = set(item) - {"name", "args", "label"}
    if unknown:
        raise fail(
            where,
            f"unknown key(s) {short_repr(sorted(map(str, unknown)))}",
            "valid keys: name, args, label",
        )
    if not isinstance(item.get("name"), str):
        raise fail(where, "needs a 'name'", f"e.g. {{name: {example}}}")
    args = item.get("args") or {}
    if not isinstance(args, Mapping):
        raise fail(f"{where}.args", f"must be a mapping, got {short_repr(args)}", "use key: value")
    return Component(name=item["name"], args=dict(args), label=item.get("label") or "")


def components(key: str, registry: Any, value: Any) -> tuple[Component, ...]:
    """The entries of list key ``key`` (names or ``{name, args, label}``), looked up in
    ``registry``; one entry may be given without the list.

    Raises:
        SpecError: not a non-empty list, a bad entry, an unknown name or duplicate labels.
    """
    if isinstance(value, (str, Mapping, Component)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise fail(
            key, f"must be a non-empty list, got {short_repr(value)}", "list at least one name"
        )
    out: list[Component] = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        comp = component(where, item, registry.names()[0])
        if comp.factory is None:
            registry.get(comp.name, key=where)
        out.append(comp)
    labels = [c.label for c in out]
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise fail(key, f"duplicate entries {dupes}", "give each a distinct 'label'")
    return tuple(out)


def _in_file(f: dataclasses.Field) -> bool:
    """Whether a spec field is a key of a spec file (``factory`` is Python-only, and a field
    with ``metadata={"spec": False}`` is filled by the builder)."""
    return f.name != "factory" and f.metadata.get("spec", True)


def field_names(cls: type) -> list[str]:
    """The keys a spec dataclass takes from a spec file."""
    return [f.name for f in dataclasses.fields(cls) if _in_file(f)]


def section(key: str, cls: type, value: Any) -> Any:
    """Section ``key`` (a mapping, or None for the defaults) as the dataclass ``cls``.

    Raises:
        SpecError: not a mapping, an unknown key, or a bad value (from ``cls``'s checks).
    """
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise fail(
            key, f"must be a mapping, got {short_repr(value)}", "write key: value pairs under it"
        )
    valid = field_names(cls)
    for name in value:
        if name not in valid:
            raise fail(f"{key}.{key_name(name)}", "unknown key", f"valid keys: {', '.join(valid)}")
    try:
        return cls(**value)
    except TypeError as exc:  # pragma: no cover - guarded by the key check above
        raise fail(key, str(exc), "check the section") from None


def to_plain(obj: Any) -> Any:
    """A spec (or any part of one) as plain, JSON-able data: what the spec builder reads back."""
    if isinstance(obj, Component):
        out: dict[str, Any] = {"name": obj.name}
        if obj.args:
            out["args"] = dict(obj.args)
        if obj.label != obj.name:
            out["label"] = obj.label
        return out
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if _in_file(f)
        }
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


__all__ = [
    "Component",
    "check_bool",
    "check_non_negative_int",
    "check_non_negative_number",
    "check_positive_int",
    "check_positive_number",
    "components",
    "fail",
    "field_names",
    "key_name",
    "section",
    "short_repr",
    "to_plain",
]
