"""The figures of ``raynn bench search`` (:mod:`raynn.bench.search`): each run's fold rows,
the truth (``full``: every configuration's mean over every fold), what each mode chose and
how good that is, medians per mode, the markdown and the metric-vs-learning-rate figure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from raynn.bench.common import machine_line, markdown_table

PEERS = ("optuna", "tune")  # the peers raynn is held against
RAYNN_MODES = ("raynn", "raynn_ray")  # ``raynn run`` with fold racing
BAR = 0.6  # raynn's wall time over the fastest peer's
FOLD_COLUMNS = ["config", "fold", "val_accuracy", "status", "trained", "start_time", "end_time"]
SUMMARY_COLUMNS = [
    "mode",
    "finished",
    "wall_s",
    "wall_min",
    "wall_max",
    "vs_fastest_peer",
    "folds_trained",
    "folds_total",
    "dropped",
    "near_best_dropped",
    "first_fold_s",
    "last_fold_s",
    "chosen",
    "rank",
    "chosen_mean",
    "regret",
    "best_se",
    "within_se",
]


@dataclass
class SearchRun:
    """One run of one mode: its timing, its fold rows (:data:`FOLD_COLUMNS`), its choice."""

    mode: str
    repeat: int
    invoked: float
    exited: float
    returncode: int
    timed_out: bool
    folds: pd.DataFrame
    chosen: str | None
    stages: dict[str, float] = field(default_factory=dict)
    run_wall_s: float = math.nan


def folds_from_jobs(jobs: pd.DataFrame) -> pd.DataFrame:
    """A ``raynn run``'s ``jobs/`` table as fold rows. Trained: every fold that started
    (``attempt >= 1``: ok, failed, or raced out while running and stopped at an epoch end);
    a pending fold that racing cancelled has ``attempt == 0``."""
    if jobs.empty:
        return pd.DataFrame(columns=FOLD_COLUMNS)
    config = jobs["config"] if "config" in jobs else jobs["model"] + "/" + jobs["scheduler"]
    return pd.DataFrame(
        {
            "config": config.astype(str),
            "fold": jobs["fold"].astype(int),
            "val_accuracy": jobs["val_accuracy"].astype(float),
            "status": jobs["status"].astype(str),
            "trained": jobs["attempt"] >= 1,
            "start_time": jobs["start_time"].astype(float),
            "end_time": jobs["end_time"].astype(float),
        }
    )


def folds_from_peer(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """A peer's ``rows.json`` as fold rows: trained unless ``pruned`` (never started)."""
    frame = pd.DataFrame(list(rows), columns=[c for c in FOLD_COLUMNS if c != "trained"])
    frame["trained"] = frame["status"] != "pruned"
    return frame[FOLD_COLUMNS]


def truth(folds: pd.DataFrame, n_folds: int) -> pd.DataFrame:
    """Per configuration of a full run: ``mean``, ``std`` (over folds, ddof 1), ``n``,
    ``se`` (std / sqrt(n)) and ``rank`` (1 = best). A configuration without ``n_folds`` ok
    folds (one diverged) has no mean and ranks last."""
    ok = folds[folds["status"] == "ok"]
    table = ok.groupby("config")["val_accuracy"].agg(["mean", "std", "count"])
    table = table.reindex(sorted(set(folds["config"])))
    table["n"] = table["count"].fillna(0).astype(int)
    table.loc[table["n"] < n_folds, "mean"] = math.nan
    table["se"] = table["std"] / table["n"].clip(lower=1) ** 0.5
    table["rank"] = table["mean"].rank(ascending=False, method="min", na_option="bottom")
    return table.drop(columns="count")


def score(chosen: str | None, ref: pd.DataFrame) -> dict[str, Any]:
    """How good ``chosen`` is in the full run ``ref`` (:func:`truth`): its rank and mean,
    the regret (best mean minus its mean) and whether that is within the best's SE."""
    nan = math.nan
    out: dict[str, Any] = {"best": "-", "best_mean": nan, "best_se": nan, "rank": nan}
    out.update(chosen_mean=nan, regret=nan, within_se=False)
    if ref.empty or ref["mean"].isna().all():
        return out
    best = str(ref["mean"].idxmax())
    out.update(best=best, best_mean=float(ref.at[best, "mean"]), best_se=float(ref.at[best, "se"]))
    if chosen is None or chosen not in ref.index:
        return out
    out["rank"] = float(ref.at[chosen, "rank"])
    out["chosen_mean"] = float(ref.at[chosen, "mean"])
    out["regret"] = out["best_mean"] - out["chosen_mean"]
    out["within_se"] = bool(out["regret"] <= out["best_se"])  # NaN (diverged): False
    return out


def dropped(folds: pd.DataFrame, n_folds: int, ref: pd.DataFrame) -> tuple[int, int]:
    """How many configurations a run dropped (fewer than ``n_folds`` ok folds: raced out,
    pruned, stopped by a scheduler) and how many of those were near the best: a full-run
    mean within one SE of the full run's best (:func:`truth`), which dropping them gets wrong."""
    ok = folds[folds["status"] == "ok"].groupby("config").size() if not folds.empty else None
    done = set(ok[ok >= n_folds].index) if ok is not None else set()
    lost = [c for c in ref.index if c not in done]
    if ref.empty or ref["mean"].isna().all():
        return len(lost), 0
    best = ref["mean"].idxmax()
    floor = ref.at[best, "mean"] - ref.at[best, "se"]
    return len(lost), int(sum(ref.at[c, "mean"] >= floor for c in lost))


def run_row(run: SearchRun, n_folds: int, folds_total: int, ref: pd.DataFrame) -> dict[str, Any]:
    """One run's figures (before medians), scored against the full run ``ref``."""
    f = run.folds
    trained = f[f["trained"]] if not f.empty else f
    complete = f[f["status"] == "ok"].groupby("config").size() if not f.empty else pd.Series()
    # raynn run exits 1 when a fold failed (diverged) but the run finished
    codes = (0,) if run.mode in PEERS else (0, 1)
    finished = not run.timed_out and run.returncode in codes and not f.empty
    started = trained["start_time"].dropna()
    ended = trained["end_time"].dropna()
    return {
        "mode": run.mode,
        "repeat": run.repeat,
        "finished": bool(finished),
        "returncode": run.returncode,
        "wall_s": run.exited - run.invoked if finished else math.inf,
        "folds_trained": len(trained),
        "folds_total": folds_total,
        "configs_complete": int((complete >= n_folds).sum()),
        **dict(zip(("dropped", "near_best_dropped"), dropped(f, n_folds, ref), strict=True)),
        "first_fold_s": float(started.min() - run.invoked) if len(started) else math.nan,
        "last_fold_s": float(ended.max() - run.invoked) if len(ended) else math.nan,
        "chosen": run.chosen or "-",
        **score(run.chosen, ref),
        "run_wall_s": run.run_wall_s,
        **{f"stage_{k}": float(v) for k, v in run.stages.items()},
    }


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per mode: medians over repeats and the spread of ``wall_s``; ``chosen`` the
    most frequent choice; ``rank``, ``regret`` and ``near_best_dropped`` the worst repeat's;
    ``within_se`` true only if every repeat's is; ``vs_fastest_peer``: wall over the fastest
    peer's median."""
    out = []
    for mode, g in rows.groupby("mode", sort=False):
        row: dict[str, Any] = {"mode": mode, "repeats": len(g)}
        row["finished"] = bool(g["finished"].all())
        medians = ("wall_s", "folds_trained", "first_fold_s", "last_fold_s", "best_se", "dropped")
        for col in medians:
            row[col] = float(g[col].median())
        row["near_best_dropped"] = int(g["near_best_dropped"].max())  # the worst repeat's
        row["folds_total"] = int(g["folds_total"].max())
        row["wall_min"], row["wall_max"] = float(g["wall_s"].min()), float(g["wall_s"].max())
        row["chosen"] = str(g["chosen"].mode().iloc[0])
        row["chosen_mean"] = float(g["chosen_mean"].median())
        row["rank"] = float(g["rank"].max()) if g["rank"].notna().all() else math.nan
        row["regret"] = float(g["regret"].max()) if g["regret"].notna().all() else math.nan
        row["within_se"] = bool(g["within_se"].all())
        out.append(row)
    table = pd.DataFrame(out)
    peers = table[table["mode"].isin(PEERS)]["wall_s"]
    table["vs_fastest_peer"] = table["wall_s"] / peers.min() if len(peers) else math.nan
    return table


def stage_lines(rows: pd.DataFrame) -> list[str]:
    """Where each raynn mode's wall time goes (medians, seconds since its command started)."""
    lines = []
    for mode in RAYNN_MODES:
        g = rows[rows["mode"] == mode]
        if g.empty or "stage_data_loaded" not in g:
            continue
        m = g.median(numeric_only=True)
        lines.append(
            f"- `{mode}`: data loaded {m['stage_data_loaded']:.2f} s, jobs planned "
            f"{m.get('stage_jobs_planned', math.nan):.2f} s, probed and scheduled "
            f"{m.get('stage_scheduled', math.nan):.2f} s, first fold started "
            f"{m['first_fold_s']:.2f} s, last fold ended {m['last_fold_s']:.2f} s, exit "
            f"{m['wall_s']:.2f} s (run.json wall_seconds {m['run_wall_s']:.2f} s)"
        )
    return lines


def bar_lines(table: pd.DataFrame) -> list[str]:
    """Each raynn mode's wall time against the fastest peer's, and the bar."""
    by = table.set_index("mode")
    peers = [p for p in PEERS if p in by.index]
    if not peers:
        return []
    fastest = min(peers, key=lambda p: by.at[p, "wall_s"])
    return [
        f"- `{m}`: {by.at[m, 'wall_s']:.1f} s, {by.at[m, 'vs_fastest_peer']:.2f}x the fastest "
        f"peer's ({fastest}, {by.at[fastest, 'wall_s']:.1f} s); bar <= {BAR}: "
        f"{'met' if by.at[m, 'vs_fastest_peer'] <= BAR else 'NOT met'}"
        for m in RAYNN_MODES
        if m in by.index
    ]


def to_markdown(table: pd.DataFrame, rows: pd.DataFrame, info: dict, head: str, cmd: str) -> str:
    """The summary: heading, machine line, the command, the table, the bar, the stages."""
    cols = [c for c in SUMMARY_COLUMNS if c in table.columns]
    fmt = {"wall_s": "{:.1f}", "wall_min": "{:.1f}", "wall_max": "{:.1f}", "rank": "{:.0f}"}
    fmt.update({c: "{:.0f}" for c in ("folds_trained",)})
    fmt.update({c: "{:.2f}" for c in ("vs_fastest_peer", "first_fold_s", "last_fold_s")})
    fmt.update({c: "{:.4f}" for c in ("chosen_mean", "regret", "best_se")})
    lines = [head, "", machine_line(info), "", f"`{cmd}`", "", *markdown_table(table, cols, fmt)]
    ref = rows.dropna(subset=["best_mean"])
    if not ref.empty:
        r = ref.iloc[0]
        best = f"`{r['best']}`, mean {r['best_mean']:.4f} ± {r['best_se']:.4f} (SE)"
        lines += ["", f"full's best: {best}"]
    for extra, title in ((bar_lines(table), ""), (stage_lines(rows), "Where raynn's time goes:")):
        if extra:
            lines += ["", *([title, ""] if title else []), *extra]
    return "\n".join(lines) + "\n"


def plot_metric_vs_lr(
    folds: pd.DataFrame, lrs: dict[str, float], raced: set[str], path: Path
) -> bool:
    """Full's val_accuracy per configuration against its learning rate (log axis): each fold
    a dot, the mean a line; configurations raced out by ``raynn`` marked x. False (nothing
    drawn) when the configurations' learning rates do not differ."""
    if len({lrs.get(c) for c in set(folds["config"])}) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = folds[folds["status"] == "ok"].assign(lr=lambda d: d["config"].map(lrs))
    means = f.groupby("config").agg(lr=("lr", "first"), mean=("val_accuracy", "mean"))
    means = means.sort_values("lr")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(f["lr"], f["val_accuracy"], s=10, alpha=0.4, color="grey", label="a fold")
    ax.plot(means["lr"], means["mean"], "o-", color="C0", ms=4, label="mean over folds")
    out = means[means.index.isin(raced)]
    if len(out):
        ax.scatter(out["lr"], out["mean"], marker="x", s=60, color="C3", label="raced out (raynn)")
    ax.set(xscale="log", xlabel="optimizer.lr", ylabel="val_accuracy (full)")
    ax.set_title("every configuration over every fold (full); x: raced out by raynn")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
