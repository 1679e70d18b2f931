"""The one spec builder: a plain mapping (a parsed YAML/JSON file) to a kind's frozen dataclass.

A kind of spec is described by a :class:`SpecKind` (its dataclass, its sections, the keys it
requires and the entries that may not be empty); :data:`raynn.spec.SPEC_KIND_TABLE` maps
each ``kind:`` to its one. :func:`build` runs the checks every kind shares: the top level is
a mapping, every unknown key at once (top level and in every section, reported together in
one :class:`~raynn.errors.SpecError` with the valid keys, the way submitit reports invalid
arguments), required keys, then each section's and the kind's own checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from raynn.errors import SpecError
from raynn.spec.checks import fail, field_names, key_name, section

MAX_SHOWN_KEYS = 20  # unknown keys named in one message; the rest are counted


@dataclass(frozen=True)
class SpecKind:
    """One kind of spec, as :func:`build` reads it.

    Attributes:
        cls: the kind's frozen dataclass (its fields are the valid top-level keys).
        sections: the mapping keys and the section dataclass each one becomes.
        entries: keys naming registered entries (a list or one) that may not be written
            empty (``null``), and the fix the message gives.
        required: keys a spec must give, and a function returning the fix for a missing one.
        prepare: rewrites the raw mapping once its keys are known good, before any section
            is built (the K-fold kind reads its search domains out of it here).
    """

    cls: type
    sections: Mapping[str, type]
    entries: Mapping[str, str] = field(default_factory=dict)
    required: Mapping[str, Callable[[], str]] = field(default_factory=dict)
    prepare: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None


def unknown_keys(kind: SpecKind, raw: Mapping[Any, Any]) -> list[tuple[str, list[str], list[str]]]:
    """Every unknown key of ``raw``: ``(section or "" for the top level, the unknown keys as
    messages name them, the valid keys there)`` per place that has some."""
    found: list[tuple[str, list[str], list[str]]] = []
    valid = field_names(kind.cls)
    top = [key_name(name) for name in raw if name not in valid]
    if top:
        found.append(("", top, valid))
    for where, cls in kind.sections.items():
        value = raw.get(where)
        if not isinstance(value, Mapping):
            continue  # None is the defaults; anything else fails in section()
        inner = field_names(cls)
        bad = [f"{where}.{key_name(name)}" for name in value if name not in inner]
        if bad:
            found.append((where, bad, inner))
    return found


def unknown_keys_error(found: list[tuple[str, list[str], list[str]]]) -> SpecError:
    """One error naming every unknown key in ``found`` and the valid keys of each place."""
    keys = [key for _, names, _ in found for key in names]
    if len(keys) == 1:
        where, _, valid = found[0]
        label = "valid keys" if where else "valid top-level keys"
        return fail(keys[0], "unknown key", f"{label}: {', '.join(valid)}")
    shown = ", ".join(f"'{key}'" for key in keys[:MAX_SHOWN_KEYS])
    if len(keys) > MAX_SHOWN_KEYS:
        shown += f" and {len(keys) - MAX_SHOWN_KEYS} more"
    fixes = "; ".join(
        f"valid {f'keys in {where}' if where else 'top-level keys'}: {', '.join(valid)}"
        for where, _, valid in found
    )
    return SpecError(f"spec keys {shown}: {len(keys)} unknown keys; {fixes}")


def build(kind: SpecKind, raw: Any) -> Any:
    """Build a validated spec of ``kind`` from a plain mapping.

    Raises:
        SpecError: the top level is not a mapping; unknown keys (all of them, in one
            error); a missing required key; a bad value or an unknown name, naming the key
            and the fix.
    """
    if not isinstance(raw, Mapping):
        raise SpecError("spec: the top level must be a mapping of keys; see jobs/*.yaml")
    found = unknown_keys(kind, raw)
    if found:
        raise unknown_keys_error(found)
    for name, fix in kind.required.items():
        if name not in raw:
            raise fail(name, "is missing", fix())
    kwargs = dict(kind.prepare(raw) if kind.prepare is not None else raw)
    for name, cls in kind.sections.items():
        kwargs[name] = section(name, cls, kwargs.get(name))
    for name, fix in kind.entries.items():
        if name in kwargs and kwargs[name] is None:
            raise fail(name, "is empty", fix)
    return kind.cls(**kwargs)


__all__ = ["MAX_SHOWN_KEYS", "SpecKind", "build", "unknown_keys", "unknown_keys_error"]
