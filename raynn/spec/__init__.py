"""Job specs: YAML/JSON files turned into frozen, validated dataclasses.

Every check that needs no data runs in ``__post_init__``, so a spec object that exists is a
valid one. Checks that need the dataset (folds against the smallest class, the dataset root)
run in :func:`raynn.core.data.load_dataset` and :func:`raynn.kfold.runner.prepare`, still
before any Ray work starts. Every error names the spec key and the fix.

The parts: :mod:`raynn.spec.checks` (the shared checks, :class:`Component`),
:mod:`raynn.spec.sections` (the sections both kinds share), :mod:`raynn.spec.builder` (the
one builder), :mod:`raynn.spec.kfold` and :mod:`raynn.spec.hogwild` (each kind's spec), and this
module (the table of kinds, :func:`load_spec`). The names other code uses are re-exported here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from raynn.errors import SpecError
from raynn.spec.builder import SpecKind, build
from raynn.spec.checks import Component, fail, short_repr
from raynn.spec.hogwild import HOGWILD, HogwildSpec
from raynn.spec.kfold import KFOLD, KFoldSpec
from raynn.spec.sections import (
    KEEP_MODELS,
    CoresPerJob,
    DatasetSpec,
    KFoldOutputSpec,
    OptimizerSpec,
    OutputSpec,
    SchedulingSpec,
    TrainingSpec,
)

MAX_SPEC_BYTES = 1 << 20  # a spec file larger than this is refused unread


class SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float rule: ``1e-3`` and ``1E5`` are numbers.

    PyYAML follows YAML 1.1, whose floats need a dot (``1.0e-3``), so ``lr: 1e-3`` would be
    read as the string ``'1e-3'``; every spec writer types it the 1.2 way.
    """


SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
MAX_SPEC_NODES = 100_000  # values in a spec once YAML aliases are expanded


SPEC_KIND_TABLE: dict[str, SpecKind] = {"kfold": KFOLD, "hogwild": HOGWILD}
SPEC_KINDS = tuple(SPEC_KIND_TABLE)


def build_spec(raw: Mapping[str, Any]) -> KFoldSpec | HogwildSpec:
    """Build a validated spec of the kind ``raw`` names (``kind:``, default ``kfold``).

    Raises:
        SpecError: an unknown kind; every unknown key at once; a bad value or an unknown
            name, naming the key and the fix.
    """
    if not isinstance(raw, Mapping):
        raise SpecError("spec: the top level must be a mapping of keys; see jobs/*.yaml")
    kind = raw.get("kind", "kfold")
    spec_kind = SPEC_KIND_TABLE.get(kind) if isinstance(kind, str) else None
    if spec_kind is None:
        raise fail("kind", f"unknown kind {short_repr(kind)}", f"valid: {', '.join(SPEC_KINDS)}")
    return build(spec_kind, raw)


def spec_from_dict(raw: Mapping[str, Any]) -> Any:
    """Build a validated spec (``KFoldSpec`` or ``HogwildSpec``) from a plain mapping."""
    return build_spec(raw)


def load_spec(path: str | os.PathLike[str]) -> Any:
    """Read a YAML or JSON spec file with safe YAML and validate it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"spec file {path} is not text (byte {exc.start} is not UTF-8); pass a YAML or "
            "JSON job spec (see jobs/)"
        ) from None
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}; check the path (see jobs/)") from None
    except OSError as exc:
        raise SpecError(f"cannot read spec file {path}: {exc.strerror}") from None
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(
            f"spec file {path} is {len(text)} bytes, more than a spec needs "
            f"({MAX_SPEC_BYTES}); pass the YAML job spec, not data"
        )
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.load(text, SpecLoader)
    except (yaml.YAMLError, json.JSONDecodeError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"spec file {path} is not valid YAML/JSON{where}; fix its syntax") from None
    if raw is None:
        raise SpecError(f"spec file {path} is empty; see jobs/kfold_digits.yaml for an example")
    if not _within(raw, MAX_SPEC_NODES):
        raise SpecError(
            f"spec file {path} expands to more than {MAX_SPEC_NODES} values (YAML aliases "
            "nested in aliases?); write the spec out plainly"
        )
    return spec_from_dict(raw)


def _within(raw: Any, budget: int) -> bool:
    """Whether ``raw`` holds at most ``budget`` values, aliases counted each time they are
    used; stops as soon as the budget is spent, so an alias bomb costs ``budget`` steps."""
    stack = [raw]
    while stack:
        budget -= 1
        if budget < 0:
            return False
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return True


__all__ = [
    "KEEP_MODELS",
    "KFOLD",
    "MAX_SPEC_BYTES",
    "MAX_SPEC_NODES",
    "SPEC_KINDS",
    "SPEC_KIND_TABLE",
    "Component",
    "CoresPerJob",
    "DatasetSpec",
    "KFoldOutputSpec",
    "KFoldSpec",
    "OptimizerSpec",
    "OutputSpec",
    "SchedulingSpec",
    "SpecLoader",
    "TrainingSpec",
    "build_spec",
    "load_spec",
    "short_repr",
    "spec_from_dict",
]
