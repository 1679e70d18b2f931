"""How many training samples per second does raynn's HOGWILD get on this machine, against its
own serial baseline and against PyTorch's own HOGWILD pattern (``model.share_memory()`` +
``torch.multiprocessing`` processes), at 1 and 2 workers, with the same model, batch, data,
epochs and per-epoch partitioning, and do they reach the same test accuracy?

Issue 4's bar: raynn's single-node samples/s is at least 0.9 of PyTorch's multiprocessing
HOGWILD at the same worker count (the ``vs_torch`` column). The ``torch_ray`` mode runs
PyTorch's HOGWILD again while an idle embedded Ray is up: ``vs_torch_ray`` tells what raynn
costs beyond Ray's mere presence on the machine.

A thin wrapper over ``raynn bench hogwild`` (:func:`raynn.bench.hogwild.bench_hogwild`, where
the modes and columns are described): every contender trains the same model (``mlp`` on
scikit-learn's digits, batch 32, the spec's SGD and schedule, one thread per worker) on the
same index-sliced batches with the same step code (:func:`raynn.hogwild.trainer.train`).
Throughput is ``samples / seconds`` from the first worker's first step to the last worker's
end (process and Ray start-up excluded, raynn's syncs with the parameter server included).
Each configuration runs ``--repeats`` times, interleaved; the medians are reported.

Usage::

    python benchmarks/hogwild_throughput.py [--epochs 60] [--repeats 3] [--workers 1,2]
        [--modes serial,raynn,torch,torch_ray] [--output DIR]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BAR = 0.9


def main() -> int:
    from raynn.bench.hogwild import bench_hogwild, parse_workers
    from raynn.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(REPO / "jobs" / "hogwild_digits.yaml"))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument(
        "--modes", default="serial,raynn,torch,torch_ray", help="see raynn bench hogwild"
    )
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--output", default=str(REPO / "bench"))
    args = parser.parse_args()
    table, out = bench_hogwild(
        load_spec(args.spec),
        parse_workers(args.workers),
        [m for m in args.modes.split(",") if m],
        args.output,
        target=args.target,
        epochs=args.epochs,
        repeats=args.repeats,
    )
    print((out / "summary.md").read_text())
    missed = 0
    for row in table[table["mode"] == "raynn"].itertuples():
        if math.isnan(row.vs_torch):
            print(f"SKIP  raynn / torch samples/s at {row.workers} worker(s): no torch run")
            continue
        ok = row.vs_torch >= BAR
        missed += not ok
        beside = row.vs_torch_ray
        print(
            f"{'PASS' if ok else 'MISS'}  raynn / torch samples/s at {row.workers} worker(s) "
            f">= {BAR}: {row.vs_torch:.3f}"
            + ("" if math.isnan(beside) else f" (raynn / torch beside Ray: {beside:.3f})")
        )
    print(f"results: {out}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
