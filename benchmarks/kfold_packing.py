"""Question: on this machine, how much sooner than one-job-at-a-time does raynn finish twelve
equal LeNet jobs on MNIST, how efficiently does it use the cores, and are the results the
same?

Runs benchmarks/specs/lenet_mnist.yaml (needs MNIST under $RAYNN_DATA) in the modes serial,
serial1, raynn, tune and processes, side by side, then checks issue 4's packing bars:
raynn makespan <= 0.80 x serial's, parallel efficiency >= 0.85, mean CPU >= 90%, and the
fixed overhead (start to first job; last job to exit) <= 10 s each.

    RAYNN_DATA=../shared/data python benchmarks/kfold_packing.py
"""

from __future__ import annotations

import sys

from _bars import main, mode

BARS = [
    (
        "raynn makespan / serial makespan <= 0.80",
        lambda t: mode(t, "raynn", "makespan_s") / mode(t, "serial", "makespan_s"),
        lambda v: v <= 0.80,
    ),
    (
        "raynn parallel efficiency >= 0.85",
        lambda t: mode(t, "raynn", "efficiency"),
        lambda v: v >= 0.85,
    ),
    (
        "raynn mean CPU utilisation >= 90%",
        lambda t: mode(t, "raynn", "cpu_mean"),
        lambda v: v >= 90,
    ),
    ("raynn start-up overhead <= 10 s", lambda t: mode(t, "raynn", "startup_s"), lambda v: v <= 10),
    (
        "raynn shutdown overhead <= 10 s",
        lambda t: mode(t, "raynn", "shutdown_s"),
        lambda v: v <= 10,
    ),
]

if __name__ == "__main__":
    sys.exit(
        main(
            "benchmarks/specs/lenet_mnist.yaml",
            ["serial", "serial1", "raynn", "tune", "processes"],
            BARS,
            __doc__,
        )
    )
