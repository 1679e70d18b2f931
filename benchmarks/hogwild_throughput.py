"""How many training samples per second does raynn's HOGWILD get on this machine, against its
own serial baseline and against PyTorch's own HOGWILD pattern (``model.share_memory()`` +
``torch.multiprocessing`` processes), at 1 and 2 workers, with the same model, batch, data,
epochs and per-epoch partitioning, and do they reach the same test accuracy?

Every contender trains the same model (``mlp`` on scikit-learn's digits, batch 32, SGD with
the spec's lr and momentum, one thread per worker) on the same index-sliced batches
(:func:`raynn.data.to_tensor`) with the same step code (:func:`raynn.hogwild.trainer.sgd_step`).
Throughput is ``samples / makespan`` where the makespan runs from the first worker's first step
to the last worker's end (process and Ray start-up excluded, raynn's syncs with the parameter
server included). Each configuration runs ``--repeats`` times; the median is reported.

Usage::

    python benchmarks/hogwild_throughput.py [--epochs 60] [--repeats 3] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import nn

from raynn.data import ArrayDataset, load_dataset, to_tensor
from raynn.hogwild.runner import run
from raynn.hogwild.spec import HogwildSpec, hogwild_spec_from_dict
from raynn.hogwild.trainer import build, epoch_shard, make_optimizer, normalizer, sgd_step
from raynn.training import evaluate

SPEC = Path(__file__).resolve().parents[1] / "jobs" / "hogwild_digits.yaml"


def _spec(epochs: int, workers: int, out: str) -> HogwildSpec:
    import yaml

    raw = yaml.safe_load(SPEC.read_text())
    raw["training"].update({"epochs": epochs, "eval_every_seconds": 60.0})
    raw["scheduler"] = "none"  # the torch pattern has no schedule: keep the lr constant
    raw["hogwild"]["workers_per_node"] = workers
    raw["output"] = {"dir": out}
    return hogwild_spec_from_dict(raw)


def _final_accuracy(run_dir: Path) -> float:
    import pandas as pd

    evals = pd.read_parquet(run_dir / "eval")
    return float(evals.loc[evals["final"], "accuracy"].iloc[-1])


def _raynn(spec: HogwildSpec, executor: str) -> dict[str, Any]:
    result = run(spec, executor=executor, progress=False, threads=1)
    rows = result.jobs
    makespan = float(rows["start_time"].min()), float(rows["end_time"].max())
    if executor == "serial":  # the training loop's own clock (evaluation excluded)
        seconds = float(rows["seconds"].sum())
    else:
        seconds = makespan[1] - makespan[0]
    return {
        "samples": int(rows["samples"].sum()),
        "seconds": seconds,
        "accuracy": _final_accuracy(result.run_dir),
    }


def _torch_worker(
    rank: int,
    workers: int,
    model: nn.Module,
    spec: HogwildSpec,
    data: ArrayDataset,
    results: Any,
    barrier: Any,
) -> None:
    """PyTorch's HOGWILD example, on raynn's batches: one process, one thread, shared weights."""
    torch.set_num_threads(1)
    torch.manual_seed(spec.seed + rank)
    opt = make_optimizer(spec, model)
    norm, loss_fn = normalizer(data), nn.CrossEntropyLoss()
    bs, samples = spec.training.batch_size, 0
    barrier.wait()  # every process imported and set up: start together
    start = time.time()
    model.train()
    for epoch in range(spec.training.epochs):
        idx = epoch_shard(len(data.y_train), spec.seed, epoch, rank, workers)
        for b in range(0, len(idx), bs):
            bi = idx[b : b + bs]
            xb = to_tensor(data.x_train, bi, *norm)
            sgd_step(model, opt, loss_fn, xb, torch.from_numpy(data.y_train[bi]))
            samples += len(bi)
    results.put((samples, start, time.time()))


def _torch_mp(spec: HogwildSpec, data: ArrayDataset, workers: int) -> dict[str, Any]:
    model = build(spec, data)
    model.share_memory()
    ctx = mp.get_context("spawn")  # this process also runs Ray: do not fork it
    results, barrier = ctx.Queue(), ctx.Barrier(workers)
    procs = [
        ctx.Process(target=_torch_worker, args=(r, workers, model, spec, data, results, barrier))
        for r in range(workers)
    ]
    for p in procs:
        p.start()
    got = [results.get() for _ in procs]
    for p in procs:
        p.join()
    acc = evaluate(model, data.x_test, data.y_test, None, normalizer(data), data.num_classes)
    return {
        "samples": sum(g[0] for g in got),
        "seconds": max(g[2] for g in got) - min(g[1] for g in got),
        "accuracy": acc.accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=None, help="write results.json here")
    args = parser.parse_args()
    import ray

    tmp = tempfile.mkdtemp(prefix="hogwild_bench_")
    data = load_dataset(_spec(args.epochs, 1, tmp).dataset)
    contenders = {
        "serial (raynn --serial, 1 thread)": lambda: _raynn(_spec(args.epochs, 1, tmp), "serial"),
    }
    for w in (1, 2):
        spec = _spec(args.epochs, w, tmp)
        contenders[f"torch.multiprocessing HOGWILD, {w} process(es)"] = lambda s=spec, w=w: (
            _torch_mp(s, data, w)
        )
        contenders[f"raynn HOGWILD (Ray), {w} worker(s)"] = lambda s=spec: _raynn(s, "ray")
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in contenders}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for _ in range(args.repeats):  # interleaved, so load drift hits every contender alike
            for label, fn in contenders.items():
                runs[label].append(fn())
    finally:
        ray.shutdown()

    cpus = len(os.sched_getaffinity(0))
    print(
        f"\nmlp on digits, batch 32, {args.epochs} epochs, median of {args.repeats} interleaved "
        f"runs, {cpus} CPUs; samples/s = samples / (first step .. last worker end)\n"
    )
    print("| contender | samples/s (median) | runs | test accuracy (median) |")
    print("|---|---|---|---|")
    summary = {}
    for label, rs in runs.items():
        rates = [r["samples"] / r["seconds"] for r in rs]
        acc = statistics.median(r["accuracy"] for r in rs)
        summary[label] = {"samples_per_second": rates, "accuracy": [r["accuracy"] for r in rs]}
        rate_list = ", ".join(f"{x:,.0f}" for x in rates)
        print(f"| {label} | {statistics.median(rates):,.0f} | {rate_list} | {acc:.4f} |")
    if args.output:
        Path(args.output).mkdir(parents=True, exist_ok=True)
        (Path(args.output) / "results.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
