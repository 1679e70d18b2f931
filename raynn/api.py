"""``run``, ``validate`` and ``report`` for every kind: read the kind once, dispatch.

The package face (:mod:`raynn`) and the CLI call these; each looks the kind up in the table
of kinds (:mod:`raynn.kinds`) and calls that kind's entry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from raynn.kinds import get_kind, run_dir_kind


def run(spec: Any = None, *, resume: str | os.PathLike[str] | None = None, **options: Any) -> Any:
    """Run ``spec`` (a ``KFoldSpec`` or ``HogwildSpec``), or resume the run directory
    ``resume`` (a ``spec`` given too must be the run's own; a complete run is left as it
    is), with its kind's ``run`` (:func:`raynn.kfold.runner.run`,
    :func:`raynn.hogwild.runner.run`: the options are theirs)."""
    kind = get_kind(spec.kind if spec is not None else run_dir_kind(resume or ""))
    return kind.run(spec, resume=resume, **options)


def validate(spec: Any) -> str:
    """Check ``spec`` and its data without running anything; a one-line description."""
    return get_kind(spec.kind).validate(spec)


@dataclass
class Report:
    """What :func:`report` made: the summary, the comparison, and the HTML report written."""

    summary: str
    kind: str = "kfold"  # the run's kind, read once
    comparison: str = ""
    html: Any = None  # raynn.runs.html.HtmlReport, when written


def report(
    run_dir: str | os.PathLike[str], against: str | os.PathLike[str] | None = None
) -> Report:
    """The summary of ``run_dir`` and, with ``against``, a paired comparison of two K-fold
    runs (the same spec run twice)."""
    kind = run_dir_kind(run_dir)
    out = Report(get_kind(kind).summarize(run_dir), kind)
    if against is not None:
        from raynn.kfold.report import compare  # K-fold only: it says so for other runs

        out.comparison = compare(run_dir, against)
    return out


def write_html(run_dir: str | os.PathLike[str], rep: Report) -> Any:
    """Write ``report.html`` and ``report/*.png`` of ``rep`` into ``run_dir``; what was
    written (:class:`raynn.runs.html.HtmlReport`)."""
    from raynn.runs.html import write_html_report

    figs = get_kind(rep.kind).figures(run_dir)
    rep.html = write_html_report(run_dir, rep.summary, figs, rep.comparison)
    return rep.html
