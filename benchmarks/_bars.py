"""Shared by the benchmark scripts: run one spec through `raynn bench kfold` and check bars."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

Bar = tuple[str, Callable[[pd.DataFrame], float], Callable[[float], bool]]


def mode(table: pd.DataFrame, name: str, column: str) -> float:
    """One cell of the summary table (IndexError if the mode did not run)."""
    return float(table.loc[table["mode"] == name, column].iloc[0])


def best_peer(table: pd.DataFrame, column: str = "wall_s") -> float:
    """The best (lowest) ``column`` of the competent peers that ran: pool, tune, multi_instance."""
    values = [
        mode(table, p, column)
        for p in ("pool", "tune", "multi_instance")
        if (table["mode"] == p).any()
    ]
    if not values:
        raise IndexError("no peer ran")
    return min(values)


def all_equal(table: pd.DataFrame, name: str) -> float:
    """Jobs of ``name`` not shown equal to a serial run at the same thread counts (differing,
    or not checked)."""
    return mode(table, name, "ok") - mode(table, name, "equal")


def main(spec: str, modes: Sequence[str], bars: Sequence[Bar], question: str) -> int:
    """Run the harness on ``spec`` and print each bar with its measured value."""
    from raynn.bench.kfold import bench_kfold
    from raynn.spec import load_spec

    parser = argparse.ArgumentParser(description=question)
    parser.add_argument("--output", default=str(REPO / "bench"))
    parser.add_argument("--timeout", type=float, default=600.0, help="per mode run, seconds")
    parser.add_argument("--modes", default=",".join(modes), help="comma-separated modes")
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode, interleaved")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    table, out = bench_kfold(
        load_spec(REPO / spec),
        modes,
        args.output,
        timeout=args.timeout,
        progress=True,
        repeats=args.repeats,
    )
    print(question)
    print((out / "summary.md").read_text())
    failed = 0
    for text, measure, passes in bars:
        try:
            value = measure(table)
        except IndexError:  # a mode this run left out
            print(f"SKIP  {text}: needs a mode that did not run")
            continue
        ok = not math.isnan(value) and passes(value)
        failed += not ok
        print(f"{'PASS' if ok else 'MISS'}  {text}: {value:.3f}")
    print(f"results: {out}")
    return 1 if failed else 0
