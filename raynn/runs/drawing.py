"""The drawing primitives of raynn's figures: a Figure without pyplot, colours, a legend of
bounded length, thinned tick labels, an empty panel's note, a mean's t-interval.

:mod:`raynn.runs.figures` (the figures of a run's tables) and the reports draw with these;
matplotlib (and scipy) are imported inside each, so importing this module loads neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MAX_LEGEND = 12  # legend entries; beyond that the rest are grouped into one "... more" entry
MAX_ROWS_LABELLED = 40  # y tick labels on a timeline or heatmap before they are thinned


def new_figure(width: float, height: float) -> Any:
    """A Figure drawn by the Agg canvas, with constrained layout (no overlapping labels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def colours(keys: Sequence[Any]) -> dict[Any, Any]:
    """A distinct colour per key: tab10 up to 10 keys, tab20 up to 20, then a wheel."""
    from matplotlib import colormaps

    n = len(keys)
    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "hsv"]
    return {k: cmap(i if n <= 20 else i / n) for i, k in enumerate(keys)}


def legend(target: Any, handles: list[Any], labels: list[str], **kwargs: Any) -> Any:
    """A legend of at most MAX_LEGEND entries; the rest become one '... and N more' entry."""
    from matplotlib.patches import Patch

    if len(labels) > MAX_LEGEND:
        rest = len(labels) - (MAX_LEGEND - 1)
        handles = handles[: MAX_LEGEND - 1] + [Patch(visible=False)]
        labels = labels[: MAX_LEGEND - 1] + [f"... and {rest} more"]
    kwargs.setdefault("fontsize", "small")
    return target.legend(handles, labels, **kwargs)


def thin_ticks(ax: Any, labels: list[str], axis: str = "y") -> None:
    """Tick every row, labelling at most MAX_ROWS_LABELLED of them (evenly spaced)."""
    step = max(1, math.ceil(len(labels) / MAX_ROWS_LABELLED))
    ticks = list(range(0, len(labels), step))
    setter = ax.set_yticks if axis == "y" else ax.set_xticks
    setter(ticks, [labels[i] for i in ticks], fontsize="small" if len(labels) > 12 else None)


def empty(ax: Any, text: str) -> None:
    """Say on the axes why there is nothing to draw."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t interval (NaN half-width for one value)."""
    from scipy import stats

    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return mean, float(stats.t.ppf(0.5 + level / 2, len(vals) - 1)) * sd / math.sqrt(len(vals))
