"""The table of kinds: what ``run``, ``validate`` and ``report`` call for each kind of run.

A kind is a package below this module (:mod:`raynn.kfold`, :mod:`raynn.hogwild`) with one
entry of each: ``run`` (a spec, or ``resume=`` a run directory, to a
:class:`~raynn.runs.record.RunResult`), ``validate`` (a spec to a one-line description of
what would run), ``summarize`` (a run directory to its markdown summary) and ``figures`` (a
run directory to its report figures). :mod:`raynn.api` and the CLI read a spec's or a run
directory's kind once (:func:`spec_file_kind`, :func:`run_dir_kind`) and dispatch through
:func:`get_kind`; no other module branches on the kind. Adding a kind is one entry in
:data:`KINDS` (and its spec in :data:`raynn.spec.SPEC_KIND_TABLE`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raynn.errors import RaynnError
from raynn.runs.files import read_bytes


@dataclass(frozen=True)
class Kind:
    """One kind of run: its entries, and how it takes the CLI's executors.

    Attributes:
        name: the spec's ``kind:``.
        run: ``run(spec, *, executor, output, resume, progress, **options) -> RunResult``.
        validate: ``validate(spec) -> str``: checks the spec and its data, runs nothing.
        summarize: ``summarize(run_dir) -> str``: the markdown summary (``report.md``).
        figures: ``figures(run_dir) -> list[Figure]``: the figures of ``report.html``.
        local_executor: what ``--executor local`` means for this kind (HOGWILD shares
            memory between Ray actors, so its parallel executor is always ``ray``).
    """

    name: str
    run: Callable[..., Any]
    validate: Callable[[Any], str]
    summarize: Callable[[str | os.PathLike[str]], str]
    figures: Callable[[str | os.PathLike[str]], list[Any]]
    local_executor: str = "local"


def _kfold() -> Kind:
    from raynn.kfold import report, runner

    return Kind("kfold", runner.run, runner.validate, report.summarize, report.figures)


def _hogwild() -> Kind:
    from raynn.hogwild import report, runner

    return Kind("hogwild", runner.run, runner.validate, report.summarize, report.figures,
                local_executor="ray")  # fmt: skip


# kinds whose local executor forks its workers from a zygote, which the CLI starts before it
# imports the kind's modules (torch): raynn.cli._zygote_for
ZYGOTE_KINDS = frozenset({"kfold"})

# loaders, so that reading the table imports only the kind asked for
KINDS: dict[str, Callable[[], Kind]] = {"kfold": _kfold, "hogwild": _hogwild}


def get_kind(name: str) -> Kind:
    """The kind called ``name``.

    Raises:
        RaynnError: an unknown kind, listing the valid ones.
    """
    loader = KINDS.get(name)
    if loader is None:
        raise RaynnError(f"unknown kind {name!r}; valid kinds: {', '.join(KINDS)}")
    return loader()


def run_dir_kind(run_dir: str | os.PathLike[str]) -> str:
    """The kind a run directory's run.json records (``kfold`` when unreadable: the K-fold
    path then reports the unreadable run.json properly).

    Raises:
        RaynnError: run.json is JSON but no run record (``{}``, ``[]``).
    """
    path = Path(run_dir) / "run.json"
    try:  # json only: the CLI reads this before it starts the zygote (no pyarrow import)
        meta = json.loads(read_bytes(path))  # never through a link (refused later, in a line)
    except (OSError, ValueError):
        return "kfold"
    spec = meta.get("spec") if isinstance(meta, dict) else None
    if not isinstance(spec, dict) or not isinstance(meta.get("runs"), list):
        raise RaynnError(
            f"{path} is not a raynn run record (expected an object with 'spec' and 'runs'); "
            "pass a run directory made by 'raynn run'"
        )
    return str(spec.get("kind", "kfold"))


def spec_file_kind(path: str | os.PathLike[str]) -> str:
    """The ``kind`` a spec file declares, read without validating it (``kfold`` when the file
    cannot be read: :func:`raynn.spec.load_spec` reports why)."""
    try:
        import yaml

        text = Path(path).read_text()
        raw = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        return str(raw.get("kind", "kfold")) if isinstance(raw, dict) else "kfold"
    except Exception:  # noqa: BLE001 - load_spec reports the problem properly
        return "kfold"
