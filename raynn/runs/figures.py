"""Figures of a run directory's tables, as matplotlib Figures (Agg; no pyplot, no display).

Every builder takes pandas DataFrames (the tables :func:`raynn.runs.results.read_table` returns)
and returns a :class:`matplotlib.figure.Figure` with a title, axis labels and, where there
are series, a legend of at most :data:`MAX_LEGEND` entries, drawn with the primitives of
:mod:`raynn.runs.drawing`. matplotlib is imported there and here only, inside the functions,
and this module only by ``raynn report``: the run path never loads it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

# the drawing primitives, named here too (raynn.runs.figures.new_figure, ...) for the reports
from raynn.runs.drawing import (
    MAX_LEGEND,
    MAX_ROWS_LABELLED,
    colours,
    empty,
    legend,
    new_figure,
    t_interval,
    thin_ticks,
)

__all__ = [
    "MAX_CONFIGS",
    "MAX_LEGEND",
    "MAX_ROWS_LABELLED",
    "accuracy_figure",
    "colours",
    "config_groups",
    "empty",
    "epochs_figure",
    "legend",
    "new_figure",
    "t_interval",
    "thin_ticks",
    "timeline_figure",
    "utilization_figure",
]

MAX_CONFIGS = 20  # configurations the accuracy figure shows (the best by mean)


def _groups(jobs: Any) -> list[tuple[str, Any]]:
    """(``model × scheduler`` label, rows) per group, sorted."""
    return [(f"{m} × {s}", g) for (m, s), g in jobs.groupby(["model", "scheduler"], sort=True)]


def config_groups(jobs: Any, top: int = MAX_CONFIGS) -> tuple[list[tuple[str, Any]], int]:
    """(configuration id, rows) of the ``top`` configurations with the best mean validation
    accuracy, best first (ties by id), and how many configurations there are; rows without
    a ``config`` column group by ``model/scheduler``."""
    if not len(jobs):
        return [], 0
    pair = jobs["model"].astype(str) + "/" + jobs["scheduler"].astype(str)
    config = jobs["config"].fillna("").astype(str) if "config" in jobs else pair
    groups = list(jobs.groupby(config.where(config != "", pair), sort=True))
    means = [float(g["val_accuracy"].mean()) for _, g in groups]
    order = sorted(range(len(groups)), key=lambda i: (math.isnan(means[i]), -means[i]))
    return [(str(groups[i][0]), groups[i][1]) for i in order[:top]], len(groups)


# -- K-fold --------------------------------------------------------------------------------------
def _fold_points(
    ax: Any, groups: list[tuple[str, Any]], column: str, palette: dict[Any, Any]
) -> list[float]:
    """Each group's folds of ``column`` in its row and its mean with the 95% t-interval just
    below; the values drawn (the folds and the intervals' ends)."""
    seen: list[float] = []
    for i, (label, g) in enumerate(groups):
        vals = g.sort_values("fold")[column].dropna().tolist()
        spread = [i - 0.15 + 0.2 * k / max(len(vals) - 1, 1) for k in range(len(vals))]
        ax.scatter(vals, spread, color=palette[label], alpha=0.75, s=28, zorder=2)
        mean, half = t_interval(vals)
        seen += vals
        if not math.isnan(half):
            seen += [mean - half, mean + half]
        if not math.isnan(mean):
            ax.errorbar(
                [mean],
                [i + 0.2],
                xerr=None if math.isnan(half) else [[half], [half]],
                fmt="D",
                color="black",
                capsize=4,
                markersize=6,
                zorder=3,
            )
    return seen


def accuracy_figure(jobs: Any) -> Any:
    """Accuracy per configuration (one row each, the best :data:`MAX_CONFIGS` by mean
    validation accuracy, best at the top): every fold's point, the mean and its 95%
    t-interval; validation, and test where the run measured it."""
    ok = jobs[jobs["status"] == "ok"] if len(jobs) else jobs
    metrics = [("val_accuracy", "validation")]
    if len(ok) and ok["test_accuracy"].notna().any():
        metrics.append(("test_accuracy", "test"))
    groups, total = config_groups(ok)
    out = set(jobs.loc[jobs["status"] == "raced_out", "config"]) if "config" in jobs else set()
    labels = [f"{k} ({len(g)} folds{', raced out' if k in out else ''})" for k, g in groups]
    height = min(max(1.8 + 0.42 * len(groups), 3.4), 14.0)
    fig = new_figure(6.0 + 4.0 * len(metrics), height)
    axes = fig.subplots(1, len(metrics), sharey=True, sharex=True, squeeze=False)[0]
    palette = colours([label for label, _ in groups])
    seen: list[float] = []
    for ax, (column, name) in zip(axes, metrics, strict=True):
        ax.set_title(f"{name} accuracy")
        ax.set_xlabel(f"{name} accuracy (fraction correct)")
        ax.set_ylabel("configuration")
        ax.grid(axis="x", alpha=0.3)
        if not groups:
            empty(ax, "no job finished ok")
            continue
        seen += _fold_points(ax, groups, column, palette)
        ax.set_yticks(range(len(groups)), labels)
        ax.set_ylim(len(groups) - 0.5, -0.5)
    if seen:  # accuracy lies in [0, 1]: an interval wider than that is cut at the edges
        pad = 0.05 * max(max(seen) - min(seen), 0.02)
        axes[0].set_xlim(max(min(seen) - pad, -0.02), min(max(seen) + pad, 1.02))
    if groups:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], marker="o", ls="", color="0.45", alpha=0.75, label="one fold"),
            Line2D([], [], marker="D", ls="-", color="black", label="mean ± 95% t-interval"),
        ]
        legend(fig, handles, [h.get_label() for h in handles], loc="outside lower center", ncols=2)
    title = "Accuracy per configuration over the folds"
    if len(groups) < total:
        title += f": the best {len(groups)} of {total} by mean validation accuracy"
    fig.suptitle(title)
    return fig


def epochs_figure(jobs: Any, epochs: Any) -> Any:
    """Validation loss and accuracy per epoch: one line per job, coloured by model x
    scheduler."""
    fig = new_figure(12.0, 4.6)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, what in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_title(f"validation {what} per epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {what}")
        ax.grid(alpha=0.3)
    fig.suptitle("Training curves: one line per job (fold), coloured by model × scheduler")
    if not len(epochs) or not len(jobs):
        empty(ax_loss, "no epoch rows")
        empty(ax_acc, "no epoch rows")
        return fig
    keys = jobs[["job_id", "model", "scheduler"]].drop_duplicates("job_id")
    rows = epochs.merge(keys, on="job_id", how="inner")
    groups = _groups(rows)
    palette = colours([label for label, _ in groups])
    handles = []
    for label, g in groups:  # one line per group, broken between jobs (a line per job is slow)
        style = {"color": palette[label], "alpha": 0.8, "marker": "o", "markersize": 3}
        (line,) = ax_loss.plot(*_jobs_apart(g, "val_loss"), **style)
        ax_acc.plot(*_jobs_apart(g, "val_accuracy"), **style)
        handles.append(line)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    legend(
        fig,
        handles,
        [label for label, _ in groups],
        loc="outside right upper",
        title="model × scheduler",
    )
    return fig


def _jobs_apart(rows: Any, column: str) -> tuple[Any, Any]:
    """``epoch`` and ``column`` of every job in ``rows`` as one line's points, in epoch order,
    with a NaN between two jobs (where matplotlib breaks a line)."""
    import numpy as np

    rows = rows.sort_values(["job_id", "epoch"])
    x, y = rows["epoch"].to_numpy(float), rows[column].to_numpy(float)
    job = rows["job_id"].to_numpy()
    breaks = np.flatnonzero(job[1:] != job[:-1]) + 1
    return np.insert(x, breaks, np.nan), np.insert(y, breaks, np.nan)


def _cpu_rows(jobs: Any) -> list[tuple[str, str, int]]:
    """The timeline's rows: (node, CPU) for every CPU some job held, else (node, worker)."""
    rows = set()
    for r in jobs.itertuples():
        cores = list(r.cores) if r.cores is not None else []
        rows.update((r.node, "cpu", int(c)) for c in cores)
        if not cores:
            rows.add((r.node, f"worker {r.worker}", -1))
    return sorted(rows)


def timeline_figure(jobs: Any) -> Any:
    """A Gantt chart: which job ran when on which CPU of which node, coloured by model."""
    from matplotlib.patches import Patch

    timed = jobs.dropna(subset=["start_time", "end_time"]) if len(jobs) else jobs
    rows = _cpu_rows(timed) if len(timed) else []
    fig = new_figure(12.0, min(max(1.6 + 0.32 * len(rows), 3.4), 14.0))
    ax = fig.subplots()
    ax.set_title("Jobs over time on each core group: packing, and the tail at the end")
    ax.set_xlabel("seconds since the first job started")
    ax.set_ylabel("node / CPU")
    if not rows:
        empty(ax, "no job with start and end times")
        return fig
    t0 = float(timed["start_time"].min())
    span = max(float(timed["end_time"].max()) - t0, 1e-9)
    models = sorted(set(timed["model"]))
    palette = colours(models)
    index = {row: i for i, row in enumerate(rows)}
    labels = len(rows) <= 24
    bars: dict[tuple[int, bool], tuple[list, list]] = {}
    for r in timed.sort_values("start_time").itertuples():
        cores = list(r.cores) if r.cores is not None else []
        keys = [(r.node, "cpu", int(c)) for c in cores] or [(r.node, f"worker {r.worker}", -1)]
        start, width = float(r.start_time) - t0, float(r.end_time - r.start_time)
        for key in keys:
            xranges, faces = bars.setdefault((index[key], r.status != "ok"), ([], []))
            xranges.append((start, width))
            faces.append(palette[r.model])
            if labels and width / span > 0.1:
                ax.text(start + width / 2, index[key], f"{r.scheduler} f{r.fold}", ha="center",
                        va="center", fontsize="x-small", color="white", clip_on=True)  # fmt: skip
    for (row, failed), (xranges, faces) in bars.items():  # one call per row: 10,000 jobs too
        ax.broken_barh(xranges, (row - 0.4, 0.8), facecolors=faces,
                       edgecolors="red" if failed else "white", linewidth=1.2 if failed else 0.6,
                       hatch="//" if failed else None)  # fmt: skip
    nodes = {n for n, _, _ in rows}
    names = [f"{kind} {c}" if c >= 0 else kind for _, kind, c in rows]
    if len(nodes) > 1:
        names = [f"{n} {k}" for (n, _, _), k in zip(rows, names, strict=True)]
    thin_ticks(ax, names)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, span * 1.01)
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(facecolor=palette[m], label=m) for m in models]
    if (timed["status"] != "ok").any():
        handles.append(Patch(facecolor="white", edgecolor="red", hatch="//", label="failed"))
    labels = [h.get_label() for h in handles]
    legend(fig, handles, labels, loc="outside right upper", title="model")
    return fig


def _sample_interval(util: Any) -> float:
    """The median time between a node's samples (each covers the interval before it)."""
    gaps = [
        g["time"].drop_duplicates().sort_values().diff().median()
        for _, g in util.groupby("node")
        if g["time"].nunique() > 1
    ]
    gaps = [float(x) for x in gaps if x == x and x > 0]
    return min(gaps) if gaps else 1.0


def _grid(data: Any, column: str, rows: int, n: int, fill: int) -> Any:
    """rows x n bins of the mean of ``column``; an empty bin takes the next sample's value
    (a sample covers the interval before it) up to ``fill`` bins back, else stays NaN."""
    import numpy as np

    means = data.groupby(["row", "bin"])[column].mean().unstack("bin")
    means = means.reindex(index=range(rows), columns=range(n))
    return (
        means.T.bfill(limit=fill).T.to_numpy(dtype=float)
        if len(means)
        else np.full((rows, n), np.nan)
    )


def utilization_figure(util: Any, t0: float | None = None, since: str = "the run started") -> Any:
    """CPU % per core over time as a heatmap: raynn's own processes apart from the rest of
    the machine where the table has ``own_percent``, else every process together. Times are
    seconds from ``t0`` (default: the first sample), described as ``since`` on the axis;
    samples before ``t0`` (start-up) show at negative times."""
    split = "own_percent" in util.columns and bool(util["own_percent"].notna().any())
    panels = (
        [("own", "raynn's own processes"), ("rest", "everything else on the machine")]
        if split
        else [("percent", "all processes (this run did not record own_percent: not split)")]
    )
    rows = sorted({(n, int(c)) for n, c in zip(util["node"], util["core"], strict=True)})
    fig, axes = _utilization_axes(len(rows), panels, since)
    if not rows:
        for ax, (_, name) in zip(axes, panels, strict=False):
            ax.set_title(name)
            ax.set_ylabel("node / core")
            empty(ax, "no utilisation samples")
        return fig
    t0 = float(util["time"].min()) if t0 is None else t0
    data = util.assign(rel=util["time"] - t0)
    if split:
        own = data["own_percent"].clip(0, 100)  # NaN (a sample not split) stays NaN
        data = data.assign(own=own, rest=(data["percent"] - own).clip(0, 100))
    bins = _TimeBins(data)
    index = {row: i for i, row in enumerate(rows)}
    data["bin"] = bins.of(data["rel"])
    data["row"] = [index[(a, int(b))] for a, b in zip(data["node"], data["core"], strict=True)]
    grids = _heatmaps(fig, axes, data, panels, rows, bins)
    names = [name for _, name in panels] if split else ["all processes"]
    _mean_panel(axes[-1], grids, names, bins)
    times = int(data["time"].nunique())
    if times < 3:
        empty(axes[-1], f"only {times} sample time(s): the run was shorter than a few intervals")
    return fig


def _utilization_axes(rows: int, panels: list[tuple[str, str]], since: str) -> tuple[Any, Any]:
    """The figure: one heatmap panel per ``panels`` entry over ``rows`` cores, then the mean."""
    height = min(max(1.2 + 0.22 * rows, 2.2), 6.0)
    fig = new_figure(12.0, height * len(panels) + 2.4)
    axes = fig.subplots(
        len(panels) + 1,
        1,
        sharex=True,
        gridspec_kw={"height_ratios": [height] * len(panels) + [2.0]},
    )
    fig.suptitle("CPU utilisation per core over time")
    axes[-1].set_title("mean over all cores")
    axes[-1].set_xlabel(f"seconds since {since}")
    axes[-1].set_ylabel("CPU %")
    return fig, axes


class _TimeBins:
    """The time axis in ``n`` equal bins (at most 240, about one sample interval each) from
    the first sample's ``rel`` time, and how many empty bins a sample fills back (``fill``)."""

    def __init__(self, data: Any) -> None:
        self.lo = float(data["rel"].min())
        span = max(float(data["rel"].max()) - self.lo, 1e-6)
        interval = _sample_interval(data)
        self.n = max(1, min(240, math.ceil(span / interval)))
        self.width = span / self.n
        self.fill = max(1, math.ceil(1.5 * interval / self.width))
        self.hi = self.lo + self.n * self.width

    def of(self, rel: Any) -> Any:
        """The bin of each time."""
        return ((rel - self.lo) // self.width).clip(upper=self.n - 1).astype(int)


def _heatmaps(
    fig: Any, axes: Any, data: Any, panels: list[tuple[str, str]], rows: list, bins: _TimeBins
) -> list[Any]:
    """Draw each panel's cores x bins heatmap (and the colour bar); the grids drawn."""
    import numpy as np

    nodes = {n for n, _ in rows}
    labels = [f"{a} {b}" if len(nodes) > 1 else f"cpu {b}" for a, b in rows]
    image, grids = None, []
    for ax, (column, name) in zip(axes, panels, strict=False):
        grid = _grid(data, column, len(rows), bins.n, bins.fill)
        grids.append(grid)
        image = ax.imshow(
            np.ma.masked_invalid(grid),
            aspect="auto",
            interpolation="nearest",
            cmap="magma",
            vmin=0,
            vmax=100,
            extent=(bins.lo, bins.hi, len(rows) - 0.5, -0.5),
        )
        ax.set_title(name)
        ax.set_ylabel("node / core")
        thin_ticks(ax, labels)
    fig.colorbar(image, ax=list(axes[:-1]), label="CPU % of the core", shrink=0.9)
    return grids


def _mean_panel(ax: Any, grids: list[Any], names: list[str], bins: _TimeBins) -> None:
    """The mean over all cores of each grid, stacked, per bin."""
    import numpy as np

    x = bins.lo + (np.arange(bins.n) + 0.5) * bins.width
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a bin no core has a sample for
        stack = [np.nan_to_num(np.nanmean(g, axis=0)) for g in grids]
    ax.stackplot(x, *stack, labels=names, colors=["tab:orange", "0.6"][: len(names)], alpha=0.85)
    ax.set_ylim(0, 100)
    ax.set_xlim(bins.lo, bins.hi)
    ax.grid(alpha=0.3)
    legend(ax, *ax.get_legend_handles_labels(), loc="upper right")
