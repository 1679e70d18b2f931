"""Question: for a scikit-learn user running GridSearchCV over a small skorch net on a CPU
machine, from calling fit to getting it back, how does raynn's joblib backend compare with
joblib's own (loky, workers thread-capped) and with Ray's (ray.util.joblib), how busy does
each keep the cores, and does any of them change a result?

Runs one seeded skorch MLP grid over scikit-learn's offline digits (3 learning rates x 3
hidden widths, cv=5, 3 epochs a fit) through loky, ray and raynn back to back, every task at
one thread; each backend pays its own start-up (Ray started fresh for each Ray-based one).
Writes summary.md and bench.json under --output (see raynn/bench/sklearn.py).

    python benchmarks/sklearn_backends.py [--output bench] [--epochs 3]
"""

from __future__ import annotations

import argparse

from raynn.bench.sklearn import BACKENDS, bench_sklearn

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--grid-size", type=int, default=3)
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    table, out = bench_sklearn(
        args.backends, args.output, grid_size=args.grid_size, cv=args.cv, epochs=args.epochs
    )
    print((out / "summary.md").read_text())
