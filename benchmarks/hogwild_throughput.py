"""How many training samples per second does raynn's HOGWILD get on this machine, against its
own serial baseline and against PyTorch's own HOGWILD pattern (``model.share_memory()`` +
``torch.multiprocessing`` processes), at 1 and 2 workers, with the same model, batch, data,
epochs and per-epoch partitioning, and do they reach the same test accuracy?

Two workloads, each a spec in ``benchmarks/specs/``, run one after the other:

``lenet`` (``hogwild_lenet_synthetic.yaml``)
    LeNet on MNIST-shaped synthetic data, batch 64: DESIGN.md section 4's HOGWILD workload
    (about 9 ms a step on one core).
``mlp`` (``hogwild_mlp_digits.yaml``)
    An MLP on scikit-learn's digits, batch 32: the small-step case (under 1 ms a step).
    What a worker pays per second for living in Ray (Ray's daemons, the actor process; see
    ``ray_actor_tax.py``) is the largest share of a step here.

Both are held to the bar (issue 11): raynn's single-node samples/s at least 0.9 of
PyTorch's at the same worker count, the median of ``--repeats`` (default 5) interleaved
runs (``vs_torch``); ``vs_torch_min`` and ``vs_torch_max`` give the spread, each repeat
against PyTorch's run of the same repeat.

The ``torch_ray`` mode runs PyTorch's HOGWILD again while an idle embedded Ray is up:
``vs_torch_ray`` tells what raynn costs beyond Ray's mere presence on the machine.

A thin wrapper over ``raynn bench hogwild`` (:func:`raynn.bench.hogwild.bench_hogwild`, where
the modes and columns are described): every contender trains the same model on the same
index-sliced batches with the same step code (:func:`raynn.hogwild.loop.train`), one
thread per worker. Throughput is ``samples / seconds`` from the first worker's first step to
the last worker's end (process and Ray start-up excluded, raynn's syncs with the parameter
server included). Each configuration runs ``--repeats`` times, interleaved; the medians are
reported. Exit status 1 when the bar workload misses the bar.

Usage::

    python benchmarks/hogwild_throughput.py [--workloads lenet,mlp] [--repeats 5]
        [--workers 1,2] [--modes serial,raynn,torch,torch_ray] [--epochs N] [--output DIR]
    python benchmarks/hogwild_throughput.py --spec SPEC ...   # any hogwild spec, held to the bar
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BAR = 0.9
SPECS = REPO / "benchmarks" / "specs"
# name: (spec, held to the bar)
WORKLOADS = {
    "lenet": (SPECS / "hogwild_lenet_synthetic.yaml", True),
    "mlp": (SPECS / "hogwild_mlp_digits.yaml", True),
}


def check_bar(table, label: str, held: bool) -> int:  # noqa: ANN001 - a pandas DataFrame
    """Print one PASS/MISS line per worker count of ``raynn``; the misses that count."""
    missed = 0
    for row in table[table["mode"] == "raynn"].itertuples():
        if math.isnan(row.vs_torch):
            print(f"SKIP  {label}: raynn / torch at {row.workers} worker(s): no torch run")
            continue
        ok = row.vs_torch >= BAR
        missed += held and not ok
        beside = row.vs_torch_ray
        print(
            f"{'PASS' if ok else 'MISS'}  {label}: raynn / torch samples/s at {row.workers} "
            f"worker(s) >= {BAR}: {row.vs_torch:.3f}"
            + f" (repeats {row.vs_torch_min:.3f} to {row.vs_torch_max:.3f})"
            + ("" if math.isnan(beside) else f" (raynn / torch beside Ray: {beside:.3f})")
            + ("" if held else "  [not held to the bar]")
        )
    return missed


def main() -> int:
    from raynn.bench.hogwild import bench_hogwild, parse_workers
    from raynn.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="lenet,mlp", help="of: " + ", ".join(WORKLOADS))
    parser.add_argument("--spec", help="run this hogwild spec instead (held to the bar)")
    parser.add_argument("--epochs", type=int, help="override each spec's training.epochs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument(
        "--modes", default="serial,raynn,torch,torch_ray", help="see raynn bench hogwild"
    )
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--output", default=str(REPO / "bench"))
    args = parser.parse_args()
    if args.spec:
        runs = [(Path(args.spec).stem, Path(args.spec), True)]
    else:
        names = [w for w in args.workloads.split(",") if w]
        unknown = sorted(set(names) - set(WORKLOADS))
        if unknown:
            parser.error(f"unknown workload(s) {unknown}; valid: {', '.join(WORKLOADS)}")
        runs = [(name, *WORKLOADS[name]) for name in names]
    missed, verdicts = 0, []
    for label, path, held in runs:
        table, out = bench_hogwild(
            load_spec(path),
            parse_workers(args.workers),
            [m for m in args.modes.split(",") if m],
            args.output,
            target=args.target,
            epochs=args.epochs,
            repeats=args.repeats,
        )
        print((out / "summary.md").read_text())
        print(f"results: {out}")
        verdicts.append((table, label, held))
    for table, label, held in verdicts:  # the verdicts together, at the end
        missed += check_bar(table, label, held)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
