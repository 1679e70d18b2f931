"""The fold-racing part of a K-fold run's summary: how many configurations were raced out,
after how many folds, the job-seconds saved, and those that ran the most folds."""

from __future__ import annotations

from collections import Counter
from typing import Any

RACED_ROWS = 10  # raced-out configurations listed one per line


def race_line(raced: list[dict[str, Any]], n_configs: int) -> str:
    """How many of the ``n_configs`` configurations were raced out, after how many ok folds
    each, and the job-seconds saved (from :func:`raynn.kfold.racing.race_summary`)."""
    after = Counter(r["folds_run"] for r in raced)
    parts = ", ".join(
        f"{n} after {k} fold{'' if k == 1 else 's'}" for k, n in sorted(after.items())
    )
    folds = sum(r["folds_raced_out"] for r in raced)
    saved = sum(r["job_seconds_saved"] for r in raced)
    return (
        f"Fold racing: {len(raced)} of {n_configs} configurations raced out: {parts}; "
        f"{folds} fold{'' if folds == 1 else 's'} raced out, about {saved:.1f} job-seconds saved."
    )


def race_lines(raced: list[dict[str, Any]], n_configs: int) -> list[str]:
    """The racing line, then the raced-out configurations that ran the most folds."""
    if not raced:
        return []
    ranked = sorted(raced, key=lambda r: (-r["folds_run"], r["config"]))
    lines = [
        "",
        race_line(raced, n_configs),
        "",
        "| configuration | folds run | raced out | job-seconds saved | why |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['config']} | {r['folds_run']} | {r['folds_raced_out']} | "
        f"{r['job_seconds_saved']:.1f} | {r['reason'].removeprefix('raced out: ')} |"
        for r in ranked[:RACED_ROWS]
    ]
    if len(ranked) > RACED_ROWS:
        more = len(ranked) - RACED_ROWS
        lines.append(f"\n... and {more} more (listed: those that ran the most folds).")
    return lines
