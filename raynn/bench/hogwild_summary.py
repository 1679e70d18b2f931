"""The tables and figure of ``raynn bench hogwild``: one row per run, medians per mode and
worker count (``vs_torch``, ``speedup_vs_serial``), every run's curve, loss versus time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raynn.bench.common import machine_line, markdown_table
from raynn.bench.hogwild_runs import CURVE_COLUMNS, HogwildRun
from raynn.spec.hogwild import HogwildSpec

SUMMARY_COLUMNS = [
    "mode",
    "workers",
    "finished",
    "samples",
    "seconds",
    "samples_per_second",
    "vs_torch",
    "vs_torch_min",
    "vs_torch_max",
    "vs_torch_ray",
    "speedup_vs_serial",
    "time_to_target_s",
    "final_accuracy",
    "final_loss",
    "startup_s",
]


def _time_to_target(run: HogwildRun, target: float) -> float:
    c = run.curve
    hit = c[c["accuracy"] >= target] if not c.empty else c
    if hit.empty:
        return math.nan
    return max(0.0, float(hit["time"].iloc[0]) - run.start)


def _final(run: HogwildRun, column: str) -> float:
    c = run.curve
    final = c[c["final"].astype(bool)] if not c.empty else c
    return float(final[column].iloc[-1]) if not final.empty else math.nan


def run_rows(runs: Sequence[HogwildRun], target: float) -> pd.DataFrame:
    """One row per run: counts, clocks, throughput, time to ``target``, final metrics."""
    rows = []
    for r in runs:
        sps = r.samples / r.seconds if r.finished and r.seconds > 0 else math.nan
        rows.append(
            {
                "mode": r.mode,
                "workers": r.workers,
                "repeat": r.repeat,
                "finished": r.finished,
                "samples": r.samples,
                "seconds": r.seconds,
                "samples_per_second": sps,
                "time_to_target_s": _time_to_target(r, target),
                "final_accuracy": _final(r, "accuracy"),
                "final_loss": _final(r, "loss"),
                "startup_s": r.start - r.invoked,
                "wall_s": r.exited - r.invoked,
                "error": r.error,
                "run_dir": str(r.run_dir) if r.run_dir else None,
            }
        )
    return pd.DataFrame(rows)


def _median(values: pd.Series) -> float:
    """The median, where NaN (never reached, not finished) counts as worst."""
    v = values.astype(float).fillna(math.inf)
    m = float(np.median(v.to_numpy())) if len(v) else math.nan
    return math.nan if math.isinf(m) else m


def summarize(runs: Sequence[HogwildRun], target: float) -> pd.DataFrame:
    """One row per (mode, workers): medians over repeats, ``vs_torch``, ``speedup_vs_serial``."""
    per_run = run_rows(runs, target)
    rows = []
    for (mode, workers), g in per_run.groupby(["mode", "workers"], sort=False):
        row: dict[str, Any] = {
            "mode": mode,
            "workers": int(workers),
            "repeats": len(g),
            "finished": bool(g["finished"].all()),
            "samples": int(g["samples"].median()),
        }
        for col in [
            "seconds",
            "samples_per_second",
            "time_to_target_s",
            "final_accuracy",
            "final_loss",
            "startup_s",
            "wall_s",
        ]:
            worst_nan = col in ("samples_per_second", "time_to_target_s")
            row[col] = _median(g[col]) if worst_nan else float(g[col].median())
        rows.append(row)
    table = pd.DataFrame(rows)
    for peer in ("torch", "torch_ray"):
        sps = table[table["mode"] == peer].set_index("workers")["samples_per_second"]
        table[f"vs_{peer}"] = [
            row.samples_per_second / sps[row.workers] if row.workers in sps else math.nan
            for row in table.itertuples()
        ]
    # the spread: each repeat against torch's run of the same repeat (they ran back to back)
    torch_runs = per_run[per_run["mode"] == "torch"].set_index(["workers", "repeat"])
    spread: dict[tuple[str, int], list[float]] = {}
    for r in per_run.itertuples():
        if (r.workers, r.repeat) in torch_runs.index:
            ref = torch_runs.loc[(r.workers, r.repeat), "samples_per_second"]
            spread.setdefault((r.mode, r.workers), []).append(r.samples_per_second / ref)
    keys = list(zip(table["mode"], table["workers"], strict=True))
    table["vs_torch_min"] = [min(spread.get(k, [math.nan])) for k in keys]
    table["vs_torch_max"] = [max(spread.get(k, [math.nan])) for k in keys]
    serial = table.loc[table["mode"] == "serial", "samples_per_second"]
    table["speedup_vs_serial"] = (
        table["samples_per_second"] / float(serial.iloc[0]) if not serial.empty else math.nan
    )
    return table[[*SUMMARY_COLUMNS, "repeats", "wall_s"]]


def curves(runs: Sequence[HogwildRun]) -> pd.DataFrame:
    """Every run's evaluations, with ``seconds`` since its first step."""
    parts = []
    for r in runs:
        if r.curve.empty:
            continue
        c = r.curve.copy()
        c.insert(0, "repeat", r.repeat)
        c.insert(0, "workers", r.workers)
        c.insert(0, "mode", r.mode)
        c["seconds"] = c["time"] - r.start
        c["final"] = c["final"].astype(bool)
        parts.append(c)
    if not parts:
        return pd.DataFrame(columns=["mode", "workers", "repeat", *CURVE_COLUMNS, "seconds"])
    return pd.concat(parts, ignore_index=True)


def plot_loss_vs_time(curve: pd.DataFrame, target: float, path: Path) -> None:
    """Test loss (top) and accuracy (bottom) against seconds, one line per mode x workers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    first = curve[curve["repeat"] == curve["repeat"].min()] if not curve.empty else curve
    for (mode, workers), g in first.groupby(["mode", "workers"], sort=False):
        label = f"{mode}, {workers} worker{'s' if workers > 1 else ''}"
        top.plot(g["seconds"], g["loss"], marker=".", lw=1.2, label=label)
        bottom.plot(g["seconds"], g["accuracy"], marker=".", lw=1.2, label=label)
    bottom.axhline(target, ls="--", color="grey", lw=0.8)
    top.set(ylabel="test loss", title="HOGWILD: global weights on the test split")
    if not first.empty and (first["loss"] > 0).all():
        top.set_yscale("log")
    bottom.set(xlabel="seconds since the first step", ylabel="test accuracy", ylim=(0, 1.02))
    if not first.empty:
        top.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def to_markdown(table: pd.DataFrame, info: dict[str, Any], spec: HogwildSpec, target: float) -> str:
    """The summary as a markdown section."""
    t = spec.training
    lines = [
        f"### `{spec.name}`: HOGWILD, {spec.model.label} on {spec.dataset.name}, "
        f"{t.epochs} epochs, batch {t.batch_size}, target accuracy {target:g}, "
        f"{info['cores']} cores",
        "",
        machine_line(info),
        "",
        *markdown_table(table, SUMMARY_COLUMNS, {"samples_per_second": "{:.0f}"}),
    ]
    return "\n".join(lines) + "\n"
