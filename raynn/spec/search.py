"""Search spaces: a domain wherever a value goes, and the configurations they make.

In a ``kind: kfold`` spec any value under ``models[i].args``, ``schedulers[i].args``,
``optimizer`` or ``training`` (``training.loss`` and its args too) may be a *domain*, a
mapping of one key (the same from Python: :func:`grid`, :func:`loguniform`, ...)::

    {grid: [v1, v2, ...]}       every value, crossed with every other grid
    {choice: [v1, v2, ...]}     one value drawn at random
    {uniform: [lo, hi]}         a float drawn uniformly
    {loguniform: [lo, hi]}      a float drawn uniformly in log space (0 < lo < hi)
    {randint: [lo, hi]}         an integer in [lo, hi)

A top-level ``search: {samples: N, seed: S, max_jobs: M}`` draws the random domains N times
for each grid point (Ray Tune's ``num_samples`` x grid). A *configuration* is a model, a
scheduler and one set of values (:class:`Configuration`); its readable id, e.g.
``mlp/cosine/lr=0.003162,hidden=[64]``, names it in tables, and its job seeds derive from it.
A spec without domains has one configuration per model x scheduler, ``model/scheduler``.

Draws depend only on the spec: each value comes from a SHA-256 of (``search.seed``, the
model, the scheduler, the grid point, the sample, the key), not from a random generator whose
stream could change between library versions. Drawn floats keep 4 significant digits, so the
id shows each value exactly. Draws that repeat a configuration (a ``choice`` drawn twice) are
dropped. The domains and how they are read out of a raw spec (the builder's first step):
:mod:`raynn.spec.domains`; here: :func:`check_space` (once the spec is built),
:func:`columns` and :func:`configurations`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import product
from typing import Any

from raynn.spec.checks import Component, fail, to_plain
from raynn.spec.domains import (
    DOMAIN_KINDS,
    MAX_JOBS,
    RANDOM_KINDS,
    Domain,
    SearchSpec,
    choice,
    extract_space,
    grid,
    is_number,
    loguniform,
    randint,
    refuse_space,
    restore_space,
    set_path,
    uniform,
)

# --- checks ------------------------------------------------------------------------------------


def _model_args(factory: Any) -> set[str] | None:
    """The keyword arguments ``factory`` names, or None where it takes any (``**kwargs``
    that it passes on, or no signature to read)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    names = {p.name for p in params if p.kind is not p.VAR_KEYWORD}
    return names - {"in_shape", "num_classes"}


def _check_model_arg(spec: Any, domain: Domain) -> None:
    """A searched model arg must be one its factory names (the built-in factories ignore
    unknown keywords, so a misspelt one would silently search nothing)."""
    from raynn.core.registry import MODELS

    comp: Component = spec.models[domain.steps[1]]
    names = _model_args(comp.factory or MODELS.get(comp.name))
    arg = domain.steps[3]
    if names is not None and len(domain.steps) >= 4 and arg not in names:
        raise fail(
            domain.path,
            f"model {comp.name} takes no argument {arg!r}",
            f"search one of: {', '.join(sorted(names)) or 'none'}",
        )


def _check_values(spec: Any, domain: Domain) -> None:
    """Every candidate value of an ``optimizer`` or ``training`` domain passes that key's
    own checks (a batch size of 0 fails here, before any data loads)."""
    where = domain.steps[0]
    if where not in ("optimizer", "training"):
        return
    current = getattr(spec, where)
    top = domain.steps[1]
    for value in domain.candidates():
        plain = to_plain(getattr(current, top))
        new = set_path({top: plain}, domain.steps[1:], value)[top]
        replace(current, **{top: new})  # the section's __post_init__ checks it


def check_space(spec: Any) -> None:
    """Check a built K-fold spec's domains and count its jobs, before anything loads.

    Raises:
        SpecError: a value a key's own checks refuse, an argument a model does not take,
            more jobs than ``search.max_jobs``.
    """
    search: SearchSpec = spec.search
    for domain in search.space:
        if domain.steps[0] == "models":
            _check_model_arg(spec, domain)
        _check_values(spec, domain)
    n = count_configurations(spec)
    if n * spec.folds > search.max_jobs:
        raise fail(
            "search",
            f"the space makes {n} configurations x {spec.folds} folds = {n * spec.folds} jobs, "
            f"more than search.max_jobs ({search.max_jobs})",
            "narrow the grids, lower search.samples, or raise search.max_jobs",
        )


# --- configurations ----------------------------------------------------------------------------


def _applies(domain: Domain, model: int, scheduler: int) -> bool:
    """Whether ``domain`` is part of the configurations of model ``model`` x scheduler
    ``scheduler`` (a model's args belong to that model only)."""
    head = domain.steps[0]
    if head == "models":
        return domain.steps[1] == model
    if head == "schedulers":
        return domain.steps[1] == scheduler
    return True


def _pairs(spec: Any) -> Iterator[tuple[int, int, list[Domain]]]:
    """Each model x scheduler pair, with the domains that apply to it."""
    for m in range(len(spec.models)):
        for s in range(len(spec.schedulers)):
            yield m, s, [d for d in spec.search.space if _applies(d, m, s)]


def count_configurations(spec: Any) -> int:
    """How many configurations the space makes at most (before repeated draws are dropped):
    computed without drawing, so a space of 10**12 is refused at once."""
    total = 0
    for _, _, domains in _pairs(spec):
        points = math.prod(len(d.args) for d in domains if d.kind == "grid")
        draws = spec.search.samples if any(d.kind in RANDOM_KINDS for d in domains) else 1
        total += points * draws
    return total


def _unit(*parts: Any) -> float:
    """A number in [0, 1) that depends only on ``parts`` (SHA-256, 53 bits)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return (int.from_bytes(digest[:8], "little") >> 11) / float(1 << 53)


@dataclass(frozen=True)
class Column:
    """A searched key as a table column: its ``name`` (:attr:`Domain.column`), Arrow
    ``type`` (``float64``, ``int64``, ``bool``, ``string``, or ``json``: JSON text), the
    domain ``kind`` (``loguniform`` plots on a log axis) and its ``short`` name in ids."""

    name: str
    type: str
    kind: str
    short: str


def cell(type_: str, value: Any) -> Any:
    """``value`` as a column of Arrow type ``type_`` stores it (None stays None: a key of
    another model); ``json`` columns hold JSON text."""
    if value is None:
        return None
    if type_ == "float64":
        return float(value)
    if type_ == "json":
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _type_of(values: tuple[Any, ...]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int64"
    if all(is_number(v) for v in values):
        return "float64"
    if all(isinstance(v, str) for v in values):
        return "string"
    return "json"


def _column_type(domain: Domain) -> str:
    if domain.kind in ("uniform", "loguniform"):
        return "float64"
    return "int64" if domain.kind == "randint" else _type_of(domain.args)


def columns(spec: Any) -> list[Column]:
    """The space's columns in spec order, one per searched key (two models searching
    ``hidden`` share ``model.hidden``; types that differ widen to float64 or JSON text)."""
    found: dict[str, tuple[str, str]] = {}
    for domain in spec.search.space:
        kind, new = domain.kind, _column_type(domain)
        if domain.column in found:
            old_type, kind = found[domain.column]
            if old_type != new:
                both = {old_type, new}
                new = "float64" if both == {"int64", "float64"} else "json"
        found[domain.column] = (new, kind)
    last = [name.rsplit(".", 1)[-1] for name in found]
    return [
        Column(name, type_, kind, tail if last.count(tail) == 1 else name)
        for (name, (type_, kind)), tail in zip(found.items(), last, strict=True)
    ]


@dataclass(frozen=True)
class Configuration:
    """A model, a scheduler and one set of searched values, with what trains it.

    ``id``: readable (``mlp/cosine/lr=0.003162,hidden=[64]``; ``mlp/cosine`` without searched
    values); ``key``: 8 hex digits of its SHA-256, for file names; ``values``: ``(column,
    value)`` of every searched key that applies to it, in spec order.
    """

    id: str
    key: str
    model: Component
    scheduler: Component
    optimizer: Any
    training: Any
    values: tuple[tuple[str, Any], ...] = ()


def _show(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _component(comp: Component, chosen: list[tuple[Domain, Any]]) -> Component:
    """``comp`` with its args set to the chosen values (``steps[3:]`` inside ``args``)."""
    if not chosen:
        return comp
    args: Any = to_plain(dict(comp.args))
    for domain, value in chosen:
        args = set_path(args, domain.steps[3:], value)
    return Component(comp.name, args, comp.label, comp.factory)


def _section(current: Any, chosen: list[tuple[Domain, Any]], cache: dict[str, Any]) -> Any:
    """The ``optimizer`` or ``training`` section with the chosen values (built once per
    distinct set of values: a section's checks run once, not once per configuration)."""
    if not chosen:
        return current
    token = json.dumps([(d.path, v) for d, v in chosen], default=str)
    if token not in cache:
        changes: dict[str, Any] = {}
        for domain, value in chosen:
            top = domain.steps[1]
            plain = changes.get(top, to_plain(getattr(current, top)))
            changes[top] = set_path({top: plain}, domain.steps[1:], value)[top]
        cache[token] = replace(current, **changes)
    return cache[token]


def _configuration(
    spec: Any, m: int, s: int, chosen: list[tuple[Domain, Any]], names: dict[str, Column],
    cache: dict[str, Any],
) -> Configuration:  # fmt: skip
    """One configuration of model ``m`` x scheduler ``s`` with the ``chosen`` values."""
    model, sched = spec.models[m], spec.schedulers[s]

    def under(head: str) -> list[tuple[Domain, Any]]:
        return [(d, v) for d, v in chosen if d.steps[0] == head]

    base = f"{model.label}/{sched.label}"
    shown = ",".join(f"{names[d.column].short}={_show(v)}" for d, v in chosen)
    config_id = f"{base}/{shown}" if chosen else base
    return Configuration(
        id=config_id,
        key=hashlib.sha256(config_id.encode()).hexdigest()[:8],
        model=_component(model, under("models")),
        scheduler=_component(sched, under("schedulers")),
        optimizer=_section(spec.optimizer, under("optimizer"), cache),
        training=_section(spec.training, under("training"), cache),
        values=tuple((d.column, v) for d, v in chosen),
    )


def configurations(spec: Any) -> list[Configuration]:
    """Every configuration of a K-fold spec, in grid order: models x schedulers x grid
    points x samples (a spec without domains: one per model x scheduler)."""
    names = {c.name: c for c in columns(spec)}
    search: SearchSpec = spec.search
    out: dict[str, Configuration] = {}
    cache: dict[str, Any] = {}
    for m, s, domains in _pairs(spec):
        grids = [d for d in domains if d.kind == "grid"]
        draws = search.samples if len(grids) < len(domains) else 1
        labels = (spec.models[m].label, spec.schedulers[s].label)
        for point_index, point in enumerate(product(*(d.args for d in grids))):
            fixed = dict(zip((d.path for d in grids), point, strict=True))
            for sample in range(draws):
                chosen = [
                    (d, fixed[d.path] if d.kind == "grid"
                     else d.draw(_unit(search.seed, *labels, point_index, sample, d.path)))
                    for d in domains
                ]  # fmt: skip
                config = _configuration(spec, m, s, chosen, names, cache)
                out.setdefault(config.id, config)  # a repeated draw runs once
    return list(out.values())


def space_record(spec: Any, configs: list[Configuration]) -> dict[str, Any]:
    """What run.json keeps of a space: the ``search`` settings, its columns and every
    configuration with its values."""
    search: SearchSpec = spec.search
    return {
        "samples": search.samples,
        "seed": search.seed,
        "max_jobs": search.max_jobs,
        "columns": [dataclasses.asdict(c) for c in columns(spec)],
        "configurations": [
            {
                "config": c.id,
                "key": c.key,
                "model": c.model.label,
                "scheduler": c.scheduler.label,
                "values": dict(c.values),
            }
            for c in configs
        ],
    }


__all__ = [
    "DOMAIN_KINDS",
    "MAX_JOBS",
    "Column",
    "Configuration",
    "Domain",
    "SearchSpec",
    "cell",
    "check_space",
    "choice",
    "columns",
    "configurations",
    "count_configurations",
    "extract_space",
    "grid",
    "loguniform",
    "randint",
    "refuse_space",
    "restore_space",
    "space_record",
    "uniform",
]
