"""What the K-fold and the HOGWILD reports share: a run's run.json, its mean utilisation,
and ``report.md``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raynn.runs.files import read_bytes
from raynn.runs.record import changed_keys
from raynn.runs.results import RunLock, read_table, write_bytes
from raynn.spec import spec_from_dict


def mean_utilization(
    run_dir: str | os.PathLike[str],
    start: float | None = None,
    end: float | None = None,
    column: str = "percent",
) -> float | None:
    """Mean CPU % over every sampled core (of the cores the run used) between start and end:
    of every process on the machine (``percent``) or of raynn's own (``own_percent``: None
    where the run did not measure it). A sample covers the time since its node's previous
    one, so each node's first sample at or after ``end`` counts too: a run shorter than the
    sampling interval has one."""
    util = read_table(run_dir, "utilization")
    if util.empty or column not in util.columns:
        return None
    nodes = last_work(read_meta(Path(run_dir))).get("nodes") or {}
    if nodes:
        keep = util.apply(lambda r: r["core"] in nodes.get(r["node"], [r["core"]]), axis=1)
        util = util[keep]
    if start is not None:
        util = util[util["time"] >= start]
    if end is not None:
        covers_end = util[util["time"] >= end].groupby("node")["time"].min()
        cut = [float(covers_end.get(node, end)) for node in util["node"]]
        util = util[util["time"].to_numpy() <= cut]
    values = util[column].dropna()
    return None if values.empty else float(values.mean())


def utilization_text(
    run_dir: str | os.PathLike[str], start: float | None = None, end: float | None = None
) -> str:
    """The mean CPU utilisation as a report shows it: ``machine 100.0%, raynn 47.7%`` (every
    process on the cores the run used, then raynn's own processes), ``machine 100.0%`` where
    raynn's share was not measured, ``-`` without samples."""
    machine = mean_utilization(run_dir, start, end)
    if machine is None:
        return "-"
    own = mean_utilization(run_dir, start, end, "own_percent")
    return f"machine {machine:.1f}%" + ("" if own is None else f", raynn {own:.1f}%")


def read_meta(run_dir: Path) -> dict[str, Any]:
    """A run directory's run.json ({} where it has none or cannot be read; never a link's)."""
    try:
        return json.loads(read_bytes(run_dir / "run.json"))
    except (OSError, ValueError):
        return {}


def attempt_status(run_dir: Path, attempt: Mapping[str, Any]) -> str:
    """An attempt's status as a report shows it: ``interrupted (SIGTERM)``; ``running`` only
    while a driver holds the run's lock, else what a killed driver (SIGKILL, a lost
    machine) left behind, with the command that finishes the run."""
    status = str(attempt.get("status", "?"))
    if attempt.get("signal"):
        status += f" ({attempt['signal']})"
    if status == "running" and not RunLock(run_dir).held():
        status = (
            "ended without a word (no driver holds its run.lock: killed, or on another "
            f"host); finish with: raynn run --resume {run_dir}"
        )
    return status


def write_report(run_dir: str | os.PathLike[str], summary: str) -> str:
    """Write ``summary`` (a kind's markdown summary) as the run directory's ``report.md``."""
    write_bytes(Path(run_dir) / "report.md", summary.encode())
    return summary


def last_work(meta: dict[str, Any]) -> dict[str, Any]:
    """run.json's last attempt that had jobs to run ({} when none): an attempt that found
    none (a resume of a complete run, as raynn recorded one before it left such runs alone)
    says nothing of the run's time or workers."""
    runs = meta.get("runs") or []
    worked = [r for r in runs if r.get("jobs", 1) != 0]  # HOGWILD's attempts name no jobs
    return (worked or runs or [{}])[-1]


# the spec keys that decide which samples each fold holds (but where the data is read from)
FOLD_KEYS = ("folds", "seed", "dataset")
NOT_FOLD_KEYS = ("dataset.root", "dataset.download")


def fold_differences(meta: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """The dotted spec keys at which two runs' folds may differ (``seed``, ``dataset.limit``):
    [] when both split the same data into the same folds, so their folds can be paired."""

    def basis(m: dict[str, Any]) -> dict[str, Any]:
        spec = m.get("spec") or {}
        try:  # the spec with its defaults, as the run used it
            spec = json.loads(json.dumps(spec_from_dict(spec).to_dict(), default=str))
        except Exception:  # noqa: BLE001 - a hand-written or older run.json: as written
            pass
        return {k: spec.get(k) for k in FOLD_KEYS}

    return [k for k in changed_keys(basis(meta), basis(other)) if k not in NOT_FOLD_KEYS]
