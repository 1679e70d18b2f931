"""Question: on twelve equal LeNet jobs on MNIST, does `raynn run` get its prompt back
sooner than one-job-at-a-time and than the best a competent user would do instead (a
thread-capped joblib pool, Ray Tune reusing its actors, a pinned multi-instance split), with
the same results?

Runs benchmarks/specs/lenet_mnist.yaml (needs MNIST under $RAYNN_DATA) and checks issue 11's
bars: raynn wall time <= 0.90 x the best peer's and <= 0.70 x serial's, fixed overhead <= 3 s,
every job bit-identical to serial1. Medians of --repeats interleaved runs (default 3).

    RAYNN_DATA=/path/to/data python benchmarks/kfold_packing.py
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
    (
        "raynn wall time / serial's <= 0.70",
        lambda t: mode(t, "raynn", "wall_s") / mode(t, "serial", "wall_s"),
        lambda v: v <= 0.70,
    ),
    ("raynn fixed overhead <= 3 s", lambda t: mode(t, "raynn", "overhead_s"), lambda v: v <= 3),
    ("raynn jobs that differ from serial", lambda t: all_equal(t, "raynn"), lambda v: v == 0),
]

if __name__ == "__main__":
    sys.exit(
        main(
            "benchmarks/specs/lenet_mnist.yaml",
            ["serial", "serial1", "raynn", "pool", "tune", "multi_instance"],
            BARS,
            __doc__,
        )
    )
