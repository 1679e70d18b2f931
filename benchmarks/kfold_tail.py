"""Question: on a mixed grid whose jobs differ ~40x in length, does `raynn run` get its
prompt back sooner than the best a competent user would do instead (a thread-capped joblib
pool, Ray Tune reusing its actors, a pinned multi-instance split), with the same results,
and does it keep the cores busy to the end?

Runs benchmarks/specs/mixed_digits.yaml (offline) and checks issue 11's bars: raynn wall
time <= 0.90 x the best peer's, fixed overhead (start to first job, last job to exit) <= 3 s,
every job bit-identical to a serial run at the same thread counts, CPU over the last 20% of
the makespan >= 75%. Medians of --repeats interleaved runs (default 3).

    python benchmarks/kfold_tail.py
"""

from __future__ import annotations

import sys

from _bars import all_equal, best_peer, main, mode

BARS = [
    (
        "raynn wall time / best peer's (pool, tune, multi_instance) <= 0.90",
        lambda t: mode(t, "raynn", "wall_s") / best_peer(t),
        lambda v: v <= 0.90,
    ),
    ("raynn fixed overhead <= 3 s", lambda t: mode(t, "raynn", "overhead_s"), lambda v: v <= 3),
    ("raynn jobs that differ from serial", lambda t: all_equal(t, "raynn"), lambda v: v == 0),
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
            ["serial", "serial1", "raynn", "pool", "tune", "multi_instance"],
            BARS,
            __doc__,
        )
    )
