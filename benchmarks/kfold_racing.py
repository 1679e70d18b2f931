"""Question: on a grid where some configurations are clearly worse, how much of the grid's
job-seconds does fold racing save, and does it still pick the same best configuration? And
on a grid of equally good configurations, does it race nothing out?

Runs `raynn bench kfold` with the modes `raynn` (the full grid) and `racing` (the same spec
with `scheduling.racing` on) on two offline digits specs, 5 folds each:
jobs/kfold_racing_digits.yaml (an MLP with two sane schedules and three whose learning rate
peaks 100x, 300x and 1000x too high) and benchmarks/specs/racing_equal_digits.yaml (four
sane schedules). Issue 15's bars: racing saves >= 30% of the full grid's job-seconds on the
first and picks the same best configuration; it races nothing out on the second.

    python benchmarks/kfold_racing.py [--repeats 3]
"""

from __future__ import annotations

import sys

from _bars import main, mode


def _saved(table):  # noqa: ANN001, ANN202
    return 1 - mode(table, "racing", "compute_s") / mode(table, "raynn", "compute_s")


def _same_best(table):  # noqa: ANN001, ANN202
    best = table.set_index("mode")["best"]
    return float(best["racing"] == best["raynn"])


BAD = [
    ("job-seconds (train + eval) saved by racing >= 0.30", _saved, lambda v: v >= 0.30),
    ("racing picks the full grid's best configuration", _same_best, lambda v: v == 1),
]
EQUAL = [
    (
        "folds raced out of an equal grid",
        lambda t: mode(t, "racing", "raced_out"),
        lambda v: v == 0,
    ),
]

if __name__ == "__main__":
    failed = main("jobs/kfold_racing_digits.yaml", ["raynn", "racing"], BAD, __doc__)
    failed |= main("benchmarks/specs/racing_equal_digits.yaml", ["raynn", "racing"], EQUAL, __doc__)
    sys.exit(failed)
