"""Summary of a HOGWILD run: accuracy against time, workers, staleness, per class; and the
figures ``raynn report`` draws of it (matplotlib, imported only when one is drawn)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from raynn.errors import RaynnError
from raynn.runs import figures as plots
from raynn.runs.html import Figure, utilization_figure
from raynn.runs.report import attempt_status, read_meta, utilization_text
from raynn.runs.results import read_table


def _f(value: Any, fmt: str = ".4f") -> str:
    try:
        if value is None or math.isnan(float(value)):
            return "-"
    except (TypeError, ValueError):
        return str(value)
    return format(float(value), fmt)


def _thin(df: Any, limit: int) -> Any:
    """At most ``limit`` rows, evenly spaced, always keeping the first and the last."""
    if len(df) <= limit:
        return df
    step = (len(df) - 1) / (limit - 1)
    keep = sorted({round(i * step) for i in range(limit)})
    return df.iloc[keep]


def accuracy_vs_time(run_dir: str | os.PathLike[str]) -> Any:
    """The ``eval/`` table sorted by attempt and time (a pandas DataFrame)."""
    evals = read_table(run_dir, "eval")
    if evals.empty:
        return evals
    return evals.sort_values(["attempt", "time"]).reset_index(drop=True)


def summarize(run_dir: str | os.PathLike[str], max_rows: int = 20) -> str:
    """A markdown summary of a HOGWILD run directory (what ``raynn report`` prints)."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    if not meta:
        raise RaynnError(
            f"{run_dir} is not a raynn run directory (no readable run.json); pass runs/<run-id>"
        )
    last = (meta.get("runs") or [{}])[-1]
    workers = read_table(run_dir, "hogwild")
    evals = accuracy_vs_time(run_dir)
    final = evals[evals["final"]] if not evals.empty else evals
    lines = [f"# raynn HOGWILD run {run_dir.name}", ""]
    lines += _overview_lines(run_dir, meta, last, final, workers)
    lines += _accuracy_lines(evals, max_rows)
    lines += _worker_lines(workers)
    lines += _per_class_lines(final)
    lines += _error_lines(workers, last)
    return "\n".join(lines) + "\n"


def _overview_lines(run_dir: Path, meta: dict, last: dict, final: Any, workers: Any) -> list[str]:
    """The summary's first bullets: the spec, the setup, the time and accuracy, the server,
    the throughput."""
    spec = meta.get("spec", {})
    h, t = spec.get("hogwild", {}), spec.get("training", {})
    lines = [
        f"- spec: {spec.get('name', '?')}; executor: {last.get('executor', '?')}; status: "
        f"{attempt_status(run_dir, last)}; attempts: {len(meta.get('runs', []))}",
        f"- model: {spec.get('model', {}).get('name', '?')} on "
        f"{spec.get('dataset', {}).get('name', '?')}; optimizer: "
        f"{spec.get('optimizer', {}).get('name', '?')} lr {spec.get('optimizer', {}).get('lr')}"
        f"; {t.get('epochs')} epochs, batch {t.get('batch_size')}",
    ]
    if last.get("executor") == "ray":
        lines.append(
            f"- workers: {last.get('workers', '?')} on {len(last.get('nodes') or {})} node(s); "
            f"push every {h.get('push_every')} steps, pull every {h.get('pull_every')}; "
            f"max_staleness {h.get('max_staleness')}; staleness_lr {h.get('staleness_lr')}; "
            f"server shards {h.get('server_shards')}"
        )
    else:
        lines.append(f"- serial baseline: 1 process, {last.get('threads', '?')} thread(s)")
    util = utilization_text(run_dir, last.get("start"), last.get("end"))
    acc = final["accuracy"].iloc[-1] if not final.empty else None
    lines.append(
        f"- wall time: {_f(last.get('wall_seconds'), '.1f')} s; final test accuracy: {_f(acc)}; "
        f"mean CPU utilisation: {util}"
    )
    servers = last.get("servers") or []
    if servers:
        s0 = servers[0]
        restored = [s["restored_from_version"] for s in servers if s.get("restored_from_version")]
        lines.append(
            f"- server: version {s0.get('version')}, {s0.get('pushes')} pushes, "
            f"{s0.get('refused')} refused (stale-synchronous waits), {s0.get('checkpoints')} "
            f"checkpoints" + (f"; restored from version {restored[0]}" if restored else "")
        )
    if not workers.empty:
        total_sps = float(workers["samples_per_second"].sum())
        lines.append(f"- throughput: {total_sps:,.0f} samples/s (sum over workers)")
    return lines


def _accuracy_lines(evals: Any, max_rows: int) -> list[str]:
    """The table of test accuracy against time, thinned to ``max_rows`` rows."""
    lines = ["", "## Test accuracy against time", ""]
    lines += ["| elapsed s | epoch | version | samples | test loss | test accuracy |"]
    lines += ["|---|---|---|---|---|---|"]
    for _, r in _thin(evals, max_rows).iterrows():
        mark = " (final)" if r["final"] else ""
        lines.append(
            f"| {r['elapsed']:.2f} | {r['epoch']:.2f} | {r['version']} | {r['samples']} | "
            f"{_f(r['loss'])} | {_f(r['accuracy'])}{mark} |"
        )
    return lines


def _worker_lines(workers: Any) -> list[str]:
    """The table of workers: where each ran, its steps, speed and staleness."""
    lines = ["", "## Workers", ""]
    lines += [
        "| worker | node | role | core | status | steps | samples/s | pushes | "
        "staleness mean / p95 / max |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    for _, r in workers.sort_values(["node", "slot"]).iterrows() if not workers.empty else []:
        stale = (
            f"{_f(r['staleness_mean'], '.2f')} / {_f(r['staleness_p95'], '.0f')} / "
            f"{_f(r['staleness_max'], '.0f')}"
            if r["pushes"]
            else "-"
        )
        lines.append(
            f"| {r['worker']} | {r['node']} | {r['role']} | {r['core']} | {r['status']} | "
            f"{r['steps']} | {r['samples_per_second']:,.0f} | {r['pushes']} | {stale} |"
        )
    return lines


def _per_class_lines(final: Any) -> list[str]:
    """The final weights' test accuracy per class (none without a final evaluation)."""
    if final.empty or not len(final["per_class_accuracy"].iloc[-1]):
        return []
    per_class = list(final["per_class_accuracy"].iloc[-1])
    lines = ["", "## Per-class test accuracy (final weights)", ""]
    lines += ["| " + " | ".join(str(i) for i in range(len(per_class))) + " |"]
    lines += ["|" + "---|" * len(per_class)]
    lines += ["| " + " | ".join(_f(v, ".3f") for v in per_class) + " |"]
    return lines


def _error_lines(workers: Any, last: dict) -> list[str]:
    """The errors of the failed workers and of the last attempt, each once."""
    failed = workers[workers["status"] != "ok"] if not workers.empty else workers
    errors = sorted({str(e) for e in failed["error"]}) if not failed.empty else []
    if last.get("error") and last["error"] not in errors:
        errors.insert(0, last["error"])
    return ["", "Errors:"] + [f"- {e}" for e in errors] if errors else []


# -- figures -------------------------------------------------------------------------------------
def eval_figure(evals: Any) -> Any:
    """Test loss and accuracy of the server's weights against time, per attempt."""
    fig = plots.new_figure(12.0, 4.4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, what in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_title(f"test {what} against time")
        ax.set_xlabel("seconds since the attempt started")
        ax.set_ylabel(f"test {what}")
        ax.grid(alpha=0.3)
    fig.suptitle("HOGWILD: the parameter server's weights evaluated while training")
    if not len(evals):
        plots.empty(ax_loss, "no evaluations")
        plots.empty(ax_acc, "no evaluations")
        return fig
    attempts = sorted(set(evals["attempt"]))
    palette = plots.colours(attempts)
    handles, labels = [], []
    for a in attempts:
        g = evals[evals["attempt"] == a].sort_values("time")
        for ax, column in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            (line,) = ax.plot(g["elapsed"], g[column], marker="o", markersize=3, color=palette[a])
            final = g[g["final"]]
            ax.plot(
                final["elapsed"],
                final[column],
                marker="*",
                markersize=13,
                ls="",
                color=palette[a],
                markeredgecolor="black",
            )
        handles.append(line)
        labels.append(f"attempt {a}")
    from matplotlib.lines import Line2D

    handles.append(
        Line2D([], [], marker="*", ls="", color="0.5", markeredgecolor="black", markersize=12)
    )
    labels.append("final weights")
    plots.legend(ax_acc, handles, labels, loc="lower right")
    return fig


def push_figure(workers: Any) -> Any:
    """Pushes (and refused pushes) per worker, and the staleness of the pushes it made."""
    fig = plots.new_figure(12.0, 4.4)
    ax_push, ax_stale = fig.subplots(1, 2)
    ax_push.set_title("pushes to the parameter server per worker")
    ax_push.set_xlabel("worker")
    ax_push.set_ylabel("pushes")
    ax_stale.set_title("staleness of the pushes (server versions behind)")
    ax_stale.set_xlabel("staleness (versions)")
    ax_stale.set_ylabel("share of the worker's pushes")
    fig.suptitle("HOGWILD: synchronisation with the parameter server")
    pushing = workers[workers["pushes"] > 0] if len(workers) else workers
    if not len(pushing):
        serial = "role" in workers.columns and len(workers) and (workers["role"] == "serial").all()
        plots.empty(ax_push, "serial baseline: one process, no pushes" if serial else "no pushes")
        plots.empty(ax_stale, "no pushes")
        return fig
    pushing = pushing.sort_values(["node", "slot", "worker"])
    names = [f"{w} ({n})" for w, n in zip(pushing["worker"], pushing["node"], strict=True)]
    x = list(range(len(names)))
    refused = pushing["refused"].fillna(0).tolist()
    ax_push.bar(x, pushing["pushes"], color="tab:blue", label="accepted pushes")
    if any(refused):
        ax_push.bar(x, refused, bottom=pushing["pushes"], color="tab:red", label="refused")
    plots.thin_ticks(ax_push, names, axis="x")
    margin = 0.5 if len(names) > 2 else 1.0  # one or two bars: not as wide as the axes
    ax_push.set_xlim(-margin, len(names) - 1 + margin)
    if len(names) > 4:
        ax_push.tick_params(axis="x", labelrotation=30)
    plots.legend(ax_push, *ax_push.get_legend_handles_labels(), loc="best")
    palette = plots.colours(names)
    handles = []
    for name, hist in zip(names, pushing["staleness_hist"], strict=True):
        counts = list(hist) if hist is not None else []
        total = sum(counts)
        if not total:
            continue
        (line,) = ax_stale.plot(
            range(len(counts)),
            [c / total for c in counts],
            marker="o",
            drawstyle="steps-mid",
            color=palette[name],
        )
        handles.append((line, name))
    from matplotlib.ticker import MaxNLocator

    ax_stale.xaxis.set_major_locator(MaxNLocator(integer=True))
    longest = max((len(h) for h in pushing["staleness_hist"] if h is not None), default=1)
    ax_stale.set_xlim(-0.5, max(longest, 2) - 0.5)
    ax_stale.set_ylim(0, 1.05)
    ax_stale.grid(alpha=0.3)
    if handles:
        plots.legend(ax_stale, [h for h, _ in handles], [n for _, n in handles], loc="upper right")
    return fig


def figures(run_dir: str | os.PathLike[str]) -> list[Figure]:
    """The figures of a HOGWILD run directory."""
    run_dir = Path(run_dir)
    evals, workers = accuracy_vs_time(run_dir), read_table(run_dir, "hogwild")
    t0 = float(evals["time"].min() - evals["elapsed"].min()) if len(evals) else None
    return [
        Figure(
            "eval",
            "hogwild_loss_accuracy_vs_time.png",
            "Test loss and accuracy of the parameter server's weights against time.",
            eval_figure(evals),
        ),
        Figure(
            "pushes",
            "hogwild_pushes_staleness.png",
            "Pushes each worker made to the parameter server (and any refused), and how "
            "many versions behind the server each push was.",
            push_figure(workers),
        ),
        utilization_figure(run_dir, t0, "the attempt started"),
    ]
