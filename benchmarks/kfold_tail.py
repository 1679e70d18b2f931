"""Question: on a mixed grid whose jobs differ ~40x in length, does raynn finish no later than
the tools people would use instead (Ray Tune, one uncapped process per job), and does it
keep the cores busy to the end instead of idling while the last big jobs finish?

Runs benchmarks/specs/mixed_digits.yaml (offline) in all modes and checks issue 4's tail
bars: raynn makespan <= min(tune, processes), CPU over the last 20% of the run >= 75%.

    python benchmarks/kfold_tail.py
"""

from __future__ import annotations

import sys

from _bars import main, mode

BARS = [
    (
        "raynn makespan / best of tune and processes <= 1.0",
        lambda t: (
            mode(t, "raynn", "makespan_s")
            / min(mode(t, "tune", "makespan_s"), mode(t, "processes", "makespan_s"))
        ),
        lambda v: v <= 1.0,
    ),
    (
        "raynn CPU utilisation over the last 20% >= 75%",
        lambda t: mode(t, "raynn", "cpu_last20"),
        lambda v: v >= 75,
    ),
]

if __name__ == "__main__":
    sys.exit(
        main(
            "benchmarks/specs/mixed_digits.yaml",
            ["serial", "serial1", "raynn", "tune", "processes"],
            BARS,
            __doc__,
        )
    )
