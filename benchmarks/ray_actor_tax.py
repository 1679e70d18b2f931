"""Question: does the same single-thread training loop step as fast in a pinned Ray actor as
in a pinned plain process, with one per core and every core busy? Whatever separates them is
a cost every raynn worker pays for being a Ray actor, beyond raynn's own code.

Both kinds run the same loop (raynn's HOGWILD step, :func:`raynn.hogwild.trainer.sgd_step`,
on an ``mlp`` over scikit-learn's digits, batch 32, each process its own model), pinned with
:func:`raynn.scheduler.cores.pin_current_process`, for ``--seconds`` each. The actors live in
the Ray that raynn starts for itself (:class:`raynn.scheduler.executor.RayExecutor`); the
processes are ``spawn``-ed with no Ray running. ``--repeats`` rounds, interleaved; medians.

    python benchmarks/ray_actor_tax.py [--seconds 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def steps_per_second(core: int, seconds: float) -> float:
    """Pin to ``core``, then train the mlp on digits for ``seconds``; return steps/s."""
    import numpy as np
    import torch

    from raynn.data import load_dataset, to_tensor
    from raynn.grid import build_model
    from raynn.hogwild.trainer import sgd_step
    from raynn.scheduler.cores import pin_current_process
    from raynn.spec import Component, DatasetSpec

    pin_current_process((core,))
    data = load_dataset(DatasetSpec(name="digits"))
    torch.manual_seed(core)
    model = build_model(Component("mlp"), data.in_shape, data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    norm = (torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1))
    rng = np.random.default_rng(core)
    steps, t0 = 0, time.perf_counter()
    while steps % 100 or time.perf_counter() - t0 < seconds:
        idx = rng.integers(0, len(data.y_train), 32)
        xb, yb = to_tensor(data.x_train, idx, *norm), torch.from_numpy(data.y_train[idx])
        sgd_step(model, opt, loss_fn, xb, yb)
        steps += 1
    return steps / (time.perf_counter() - t0)


def _process_main(core: int, seconds: float, out: mp.Queue) -> None:
    out.put(steps_per_second(core, seconds))


def run_processes(cores: list[int], seconds: float) -> list[float]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_process_main, args=(c, seconds, out)) for c in cores]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return rates


def run_actors(cores: list[int], seconds: float) -> list[float]:
    import ray

    from raynn.scheduler.executor import RayExecutor

    executor = RayExecutor(num_cpus=len(cores))
    executor.prepare(1, 1)
    try:

        class Stepper:
            def ready(self) -> bool:
                return True

            def run(self, core: int, seconds: float) -> float:
                return steps_per_second(core, seconds)

        actor_cls = ray.remote(num_cpus=1)(Stepper)
        actors = [actor_cls.remote() for _ in cores]
        ray.get([a.ready.remote() for a in actors])  # every process up before any starts
        return ray.get([a.run.remote(c, seconds) for a, c in zip(actors, cores, strict=True)])
    finally:
        executor.close()


def main() -> int:
    from raynn.scheduler.cores import usable_cpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = usable_cpus()
    rates: dict[str, list[float]] = {"process": [], "actor": []}
    for r in range(args.repeats):  # interleaved, so load drift hits both alike
        for kind, fn in (("process", run_processes), ("actor", run_actors)):
            per_worker = fn(cores, args.seconds)
            rates[kind].append(sum(per_worker))
            shown = ", ".join(f"{x:,.0f}" for x in per_worker)
            print(f"[actor tax] round {r + 1}, {kind}: {sum(per_worker):,.0f} steps/s ({shown})")
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(" ".join(__doc__.split("\n\n")[0].split()))
    print(f"{len(cores)} cores, {args.seconds:g} s per run, median of {args.repeats} rounds:")
    print(f"  plain processes: {med['process']:,.0f} steps/s")
    print(f"  Ray actors:      {med['actor']:,.0f} steps/s")
    print(f"  actor / process: {med['actor'] / med['process']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
