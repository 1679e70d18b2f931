"""Question: does the same single-thread training loop step as fast in a pinned Ray actor as
in a pinned plain process, with one per core and every core busy? Whatever separates them is
a cost every raynn worker pays for being a Ray actor, beyond raynn's own code. Where does it
come from: Ray running on the machine at all, or the actor's own process?

Every kind runs the same loop (raynn's HOGWILD step, :func:`raynn.hogwild.loop.sgd_step`,
on an ``mlp`` over scikit-learn's digits, batch 32, about 0.7 ms a step, each process its own
model), pinned with :func:`raynn.placement.cores.pin_current_process`, for ``--seconds``:

``process``
    ``spawn``-ed plain processes, no Ray running.
``process_ray``
    the same processes while raynn's own Ray (:class:`raynn.kfold.executors.RayExecutor`)
    is up with one idle actor per core: the cost of Ray's presence.
``actor``
    the loop in those actors.
``actor_child``
    the loop in a process each actor ``spawn``s (pinned like it): the actor's process
    left out, Ray's presence kept.

``--repeats`` rounds, the kinds interleaved; medians.

    python benchmarks/ray_actor_tax.py [--seconds 8] [--repeats 3] [--kinds process,actor]
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

    from raynn.core.data import load_dataset
    from raynn.core.model_builder import build_model
    from raynn.hogwild.loop import sgd_step
    from raynn.placement.cores import pin_current_process
    from raynn.spec import Component, DatasetSpec

    pin_current_process((core,))
    data = load_dataset(DatasetSpec(name="digits"))
    torch.manual_seed(core)
    model = build_model(Component("mlp"), data.in_shape, data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    norm = data.normalizer()
    rng = np.random.default_rng(core)
    steps, t0 = 0, time.perf_counter()
    while steps % 100 or time.perf_counter() - t0 < seconds:
        idx = rng.integers(0, len(data.y_train), 32)
        xb, yb = norm(data.x_train, idx), torch.from_numpy(data.y_train[idx])
        sgd_step(model, opt, loss_fn, xb, yb)
        steps += 1
    return steps / (time.perf_counter() - t0)


def _process_main(core: int, seconds: float, out: mp.Queue) -> None:
    out.put(steps_per_second(core, seconds))


def run_processes(cores: list[int], seconds: float) -> list[float]:
    """One spawned process per core, each running the loop; their steps/s."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_process_main, args=(c, seconds, out)) for c in cores]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return rates


class Stepper:
    """An actor per core: runs the loop itself, or in a process it spawns."""

    def ready(self) -> bool:
        return True

    def run(self, core: int, seconds: float) -> float:
        return steps_per_second(core, seconds)

    def run_child(self, core: int, seconds: float) -> float:
        # by module, not by value: the spawned child must import its target
        sys.path.insert(0, str(REPO / "benchmarks"))
        import ray_actor_tax

        return ray_actor_tax.run_processes([core], seconds)[0]


def run_in_ray(kind: str, cores: list[int], seconds: float) -> list[float]:
    """Start raynn's Ray with one idle actor per core, then run ``kind`` there; steps/s."""
    import ray

    from raynn.kfold.executors.factory import RayExecutor

    executor = RayExecutor(num_cpus=len(cores))
    executor.size_groups(1, 1)
    try:
        actor_cls = ray.remote(num_cpus=1)(Stepper)
        actors = [actor_cls.remote() for _ in cores]
        ray.get([a.ready.remote() for a in actors])  # every process up before any starts
        if kind == "process_ray":
            return run_processes(cores, seconds)
        pairs = zip(actors, cores, strict=True)
        if kind == "actor":
            return ray.get([a.run.remote(c, seconds) for a, c in pairs])
        return ray.get([a.run_child.remote(c, seconds) for a, c in pairs])
    finally:
        executor.close()


KINDS = ("process", "process_ray", "actor", "actor_child")


def main() -> int:
    from raynn.placement.cores import usable_cpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", default=",".join(KINDS), help="of: " + ", ".join(KINDS))
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds or set(kinds) - set(KINDS):
        parser.error(f"--kinds {args.kinds!r}: choose from {', '.join(KINDS)}")
    cores = usable_cpus()
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(args.repeats):  # interleaved, so load drift hits all alike
        for kind in kinds:
            if kind == "process":
                per_worker = run_processes(cores, args.seconds)
            else:
                per_worker = run_in_ray(kind, cores, args.seconds)
            rates[kind].append(sum(per_worker))
            shown = ", ".join(f"{x:,.0f}" for x in per_worker)
            print(f"[actor tax] round {r + 1}, {kind}: {sum(per_worker):,.0f} steps/s ({shown})")
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(" ".join(__doc__.split("\n\n")[0].split()))
    print(f"{len(cores)} cores, {args.seconds:g} s per run, median of {args.repeats} rounds:")
    base = med.get("process")
    for kind in kinds:
        ratio = f"  {med[kind] / base:.3f} of process" if base else ""
        print(f"  {kind:<12} {med[kind]:9,.0f} steps/s{ratio}")
    if "actor" in med and "actor_child" in med:
        print(f"  actor_child / actor: {med['actor_child'] / med['actor']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
