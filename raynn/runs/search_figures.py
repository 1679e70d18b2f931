"""A searched run's columns: as table cells, and a figure per numeric key (the metric against it).

run.json's ``search`` record names the columns a K-fold run's ``jobs/`` table has for its
searched keys (:func:`raynn.spec.search.columns`); :func:`value_text` writes a value as a
report's cell, and :func:`figures` draws one figure for each numeric one (float64, int64):
every ok fold a point at its configuration's value, each configuration's mean a diamond,
the folds a raced-out configuration finished as grey x's.
matplotlib is imported inside the functions: the run path never loads it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from raynn.runs.figures import colours, empty, legend, new_figure
from raynn.runs.files import safe_name
from raynn.runs.html import Figure

NUMERIC = ("float64", "int64")  # searched column types that get a figure
LOG_SPAN = 100.0  # a numeric grid of positive values spanning this factor plots on a log axis


def searched_columns(meta: Mapping[str, Any], jobs: Any) -> list[dict[str, str]]:
    """run.json's searched columns (``name``, ``type``, ``kind``, ``short``) that ``jobs``
    has, in spec order; [] for a run without a search or written before run.json kept it."""
    columns = (meta.get("search") or {}).get("columns") or []
    return [c for c in columns if isinstance(c, dict) and c.get("name") in jobs.columns]


def value_text(value: Any, type_: str) -> str:
    """A searched value as a table cell: ``-`` where the key does not apply."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if type_ == "int64":
        return str(int(value))
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def column_heads(columns: list[dict[str, str]]) -> list[str]:
    """A table's leading heads: model, scheduler and each searched column's short name."""
    return ["model", "scheduler", *(c.get("short") or c["name"] for c in columns)]


def log_axis(jobs: Any, column: Mapping[str, str]) -> bool:
    """Whether ``column`` plots on a log axis: a ``loguniform`` key, or a grid of positive
    values spanning at least :data:`LOG_SPAN` (``[1e-4, 1e-3, 1e-2]``)."""
    if column.get("kind") == "loguniform":
        return True
    values = jobs[column["name"]].dropna() if column["name"] in jobs else []
    if column.get("kind") != "grid" or not len(values) or float(values.min()) <= 0:
        return False
    return float(values.max()) / float(values.min()) >= LOG_SPAN


def _pair(rows: Any) -> Any:
    return rows["model"].astype(str) + " × " + rows["scheduler"].astype(str)


def _handles(pairs: list[str], palette: dict[str, Any], raced: bool) -> list[Any]:
    from matplotlib.lines import Line2D

    dot = {"marker": "o", "ls": "", "alpha": 0.6}
    handles = (
        [Line2D([], [], color=palette[p], label=f"one fold: {p}", **dot) for p in pairs]
        if len(pairs) > 1
        else [Line2D([], [], color=palette[pairs[0]], label="one fold", **dot)]
    )
    handles.append(Line2D([], [], marker="D", ls="", color="black", label="configuration mean"))
    if raced:
        handles += [
            Line2D([], [], marker="x", ls="", color="0.55", label="raced out: its finished folds"),
            Line2D([], [], marker="D", ls="", mfc="none", color="0.55", label="raced out: mean"),
        ]
    return handles


def metric_figure(
    jobs: Any,
    column: Mapping[str, str],
    raced_out: Collection[str] = (),
    metric: str = "val_accuracy",
) -> Any:
    """``metric`` of every ok fold against ``column``'s value, the configurations in
    ``raced_out`` apart (``jobs`` has ``config``: :func:`raynn.kfold.racing.with_config`); a
    log x axis where :func:`log_axis` says so."""
    name, kind = column["name"], column.get("kind", "?")
    what = "validation accuracy" if metric == "val_accuracy" else metric.replace("_", " ")
    log = log_axis(jobs, column)
    fig = new_figure(10.0, 5.2)
    ax = fig.subplots()
    ax.set_title(f"{what} against {name} ({kind})")
    ax.set_xlabel(f"{name}" + (" (log scale)" if log else ""))
    ax.set_ylabel(what)
    ax.grid(alpha=0.3)
    ok = jobs[jobs["status"] == "ok"] if len(jobs) else jobs
    ok = ok.dropna(subset=[name, metric]) if len(ok) else ok
    if not len(ok):
        empty(ax, f"no ok fold with a value of {name}")
        return fig
    out = set(raced_out)
    pairs = sorted(set(_pair(ok)))
    palette = colours(pairs)
    # four calls in all, however many configurations (a call per point is minutes at 10,000)
    kept = ~ok["config"].isin(out)
    folds = ok[kept]
    colour = [palette[p] for p in _pair(folds)]
    ax.scatter(folds[name].astype(float), folds[metric].astype(float), color=colour, alpha=0.6,
               s=24, zorder=2)  # fmt: skip
    raced = ok[~kept]
    ax.scatter(raced[name].astype(float), raced[metric].astype(float), marker="x", color="0.55",
               s=30, zorder=2)  # fmt: skip
    means = ok.groupby("config", sort=True).agg(x=(name, "first"), y=(metric, "mean"))
    gone = means.index.isin(out)
    ax.scatter(means.x[~gone].astype(float), means.y[~gone], marker="D", color="black", s=30,
               zorder=3)  # fmt: skip
    ax.scatter(means.x[gone].astype(float), means.y[gone], marker="D", facecolors="none",
               edgecolors="0.55", zorder=3)  # fmt: skip
    if log:
        ax.set_xscale("log")
    elif column.get("type") == "int64":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = _handles(pairs, palette, bool(out & set(ok["config"])))
    legend(fig, handles, [h.get_label() for h in handles], loc="outside right upper")
    return fig


def figures(
    jobs: Any, columns: list[dict[str, str]], raced_out: Collection[str] = ()
) -> list[Figure]:
    """A :class:`~raynn.runs.html.Figure` per numeric column of ``columns``
    (:func:`searched_columns`), ``metric_vs_<column>.png``; none for other columns.
    ``raced_out``: the configurations fold racing stopped."""
    figs = []
    for c in (c for c in columns if c.get("type") in NUMERIC):
        scale = "log axis" if log_axis(jobs, c) else "linear axis"
        figs.append(
            Figure(
                f"metric-vs-{safe_name(c['name'])}",
                f"metric_vs_{safe_name(c['name'])}.png",
                f"Validation accuracy against {c['name']} ({c.get('kind', '?')}, {scale}): each "
                "ok fold a point, each configuration's mean a diamond; the folds a raced-out "
                "configuration finished as grey x's.",
                metric_figure(jobs, c, raced_out),
            )
        )
    return figs
