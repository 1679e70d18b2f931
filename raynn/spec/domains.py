"""Search domains: what a spec may write instead of a value, and how they are read out of it.

``{grid: [...]}``, ``{choice: [...]}``, ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``,
``{randint: [lo, hi]}`` (from Python: :func:`grid`, ...), and ``search: {samples, seed,
max_jobs}`` (:class:`SearchSpec`). :func:`extract_space` reads a raw spec's domains out
before the spec is built (each stands as its first value meanwhile), :func:`restore_space`
puts them back into a plain spec, :func:`refuse_space` refuses them where a kind takes none.
What the domains make, the configurations, is :mod:`raynn.spec.search`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from raynn.spec.checks import check_positive_int, fail, section, short_repr

DOMAIN_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
RANDOM_KINDS = ("choice", "uniform", "loguniform", "randint")
MAX_JOBS = 100_000
# where a domain may stand: a model's or scheduler's args, the optimizer, training
_SEARCHABLE = re.compile(
    r"^(models\[\d+\]\.args\.|schedulers\[\d+\]\.args\.|optimizer\.(?!factory)|training\.)"
)


def grid(values: list[Any]) -> dict[str, list[Any]]:
    """Every value of ``values``, crossed with every other grid (``{grid: [...]}``)."""
    return {"grid": list(values)}


def choice(values: list[Any]) -> dict[str, list[Any]]:
    """One of ``values``, drawn for each sample (``{choice: [...]}``)."""
    return {"choice": list(values)}


def uniform(lo: float, hi: float) -> dict[str, list[float]]:
    """A float drawn uniformly from ``[lo, hi]`` (``{uniform: [lo, hi]}``)."""
    return {"uniform": [lo, hi]}


def loguniform(lo: float, hi: float) -> dict[str, list[float]]:
    """A float drawn uniformly in log space from ``[lo, hi]``, ``0 < lo < hi``."""
    return {"loguniform": [lo, hi]}


def randint(lo: int, hi: int) -> dict[str, list[int]]:
    """An integer drawn from ``[lo, hi)`` (``{randint: [lo, hi]}``)."""
    return {"randint": [lo, hi]}


def is_domain(value: Any) -> bool:
    """Whether ``value`` is a domain: a mapping of exactly one key of :data:`DOMAIN_KINDS`."""
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in DOMAIN_KINDS


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Domain:
    """One searched value: its spec ``path`` (e.g. ``optimizer.lr``), ``kind``, ``args``
    (the values of ``grid``/``choice``, or ``(lo, hi)``) and ``steps`` (the path as keys and
    list indexes)."""

    path: str
    kind: str
    args: tuple[Any, ...]
    steps: tuple[str | int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind in ("grid", "choice"):
            if not self.args:
                raise fail(self.path, f"{{{self.kind}: []}} is empty", "list at least one value")
        else:
            self._check_bounds()

    def _check_bounds(self) -> None:
        key, kind, args = self.path, self.kind, self.args
        example = {"uniform": "[0.0, 0.5]", "loguniform": "[1.0e-4, 1.0e-1]"}.get(kind, "[16, 129]")
        if len(args) != 2 or not all(map(is_number, args)):
            raise fail(
                key, f"{kind} needs [lo, hi], got {short_repr(list(args))}",
                f"write e.g. {{{kind}: {example}}}",
            )  # fmt: skip
        lo, hi = args
        if kind == "loguniform" and lo <= 0:
            raise fail(key, f"loguniform needs bounds above 0, got lo={lo}", f"use e.g. {example}")
        if kind == "randint" and not all(isinstance(a, int) for a in args):
            raise fail(
                key, f"randint needs integer bounds, got {short_repr(list(args))}",
                f"use e.g. {example} (hi exclusive)",
            )  # fmt: skip
        if lo >= hi:
            raise fail(key, f"{kind} needs lo < hi, got [{lo}, {hi}]", "swap or widen the bounds")

    @property
    def column(self) -> str:
        """The table column of this key: ``model.hidden``, ``scheduler.t_0``,
        ``optimizer.lr``, ``training.loss.label_smoothing`` (no list index, no ``args``)."""
        name = re.sub(r"^models\[\d+\]\.args\.", "model.", self.path)
        name = re.sub(r"^schedulers\[\d+\]\.args\.", "scheduler.", name)
        return name.replace(".args.", ".")

    def candidates(self) -> tuple[Any, ...]:
        """The values a key's own checks must accept: every listed value, or both bounds."""
        if self.kind == "randint":
            return (self.args[0], self.args[1] - 1)
        return self.args

    def draw(self, u: float) -> Any:
        """The value at ``u`` in ``[0, 1)`` (floats kept to 4 significant digits)."""
        lo, hi = (self.args + (None, None))[:2]
        if self.kind in ("grid", "choice"):
            return self.args[min(int(u * len(self.args)), len(self.args) - 1)]
        if self.kind == "randint":
            return lo + min(int(u * (hi - lo)), hi - lo - 1)
        if self.kind == "uniform":
            value = lo + u * (hi - lo)
        else:
            value = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        return float(f"{value:.4g}")

    def to_plain(self) -> dict[str, list[Any]]:
        """The domain as a spec writes it."""
        return {self.kind: list(self.args)}


@dataclass(frozen=True)
class SearchSpec:
    """``search``: how often the random domains are drawn, from which seed, and the most jobs
    a space may make. ``space`` (not a file key) holds the spec's domains, in spec order."""

    samples: int = 1
    seed: int = 0
    max_jobs: int = MAX_JOBS
    space: tuple[Domain, ...] = field(default=(), metadata={"spec": False})

    def __post_init__(self) -> None:
        check_positive_int("search.samples", self.samples)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise fail(
                "search.seed", f"must be an integer, got {short_repr(self.seed)}", "use e.g. 0"
            )
        check_positive_int("search.max_jobs", self.max_jobs)


# --- reading domains out of a raw spec -------------------------------------------------------

Path = tuple[str | int, ...]


def path_text(path: Path) -> str:
    """``("models", 0, "args", "hidden")`` as ``models[0].args.hidden``."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def _walk(value: Any, path: Path) -> Iterator[tuple[Path, Any]]:
    """Every (path, domain) under ``value``; a domain's own values are not searched."""
    if is_domain(value):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, (*path, str(key)))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _walk(item, (*path, i))


def set_path(tree: Any, path: Path, value: Any) -> Any:
    """A copy of plain ``tree`` (mappings and lists) with ``value`` at ``path``."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    out: Any = list(tree) if isinstance(head, int) else dict(tree)
    out[head] = set_path(tree[head], rest, value)
    return out


def _domain(path: Path, value: Mapping[str, Any]) -> Domain:
    """The domain ``value`` at ``path``, which must be a place that takes one."""
    text = path_text(path)
    if not _SEARCHABLE.match(text):
        raise fail(
            text,
            "takes no search domain",
            "search only models[i].args, schedulers[i].args, optimizer and training; "
            "write one value here",
        )
    kind, args = next(iter(value.items()))
    if not isinstance(args, (list, tuple)):
        raise fail(text, f"{kind} needs a list, got {short_repr(args)}", f"write {{{kind}: [...]}}")
    return Domain(text, kind, tuple(args), path)


def extract_space(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` with every domain replaced by its first candidate value, and ``search`` made
    a :class:`SearchSpec` holding the domains.

    The spec is then built and checked as usual, each domain standing as one value;
    :func:`check_space` checks their other values.

    Raises:
        SpecError: a domain where none may stand, a malformed one, a bad ``search``.
    """
    out = dict(raw)
    domains = []
    for path, value in _walk({k: v for k, v in raw.items() if k != "search"}, ()):
        domain = _domain(path, value)
        domains.append(domain)
        out = set_path(out, path, domain.candidates()[0])
    if domains or raw.get("search") is not None:
        found = section("search", SearchSpec, raw.get("search"))
        out["search"] = replace(found, space=tuple(domains))
    return out


def refuse_space(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """``raw`` unchanged, for a kind that trains one configuration (HOGWILD).

    Raises:
        SpecError: a search domain anywhere in it.
    """
    for path, _ in _walk(raw, ()):
        raise fail(
            path_text(path),
            "a HOGWILD run trains one configuration, so it takes no search domain",
            "write one value, or search it in a kind: kfold spec",
        )
    return raw


def restore_space(plain: dict[str, Any], search: SearchSpec) -> dict[str, Any]:
    """A plain spec (``to_plain``) with its domains back in place: what :func:`extract_space`
    read, so that run.json's spec rebuilds the same space."""
    for domain in search.space:
        plain = set_path(plain, domain.steps, domain.to_plain())
    return plain
