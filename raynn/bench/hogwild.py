"""``raynn bench hogwild``: serial SGD, raynn HOGWILD and PyTorch's HOGWILD, side by side.

Question answered: how many training samples per second does raynn's HOGWILD get at 1, 2, ...
workers, against its own serial baseline and against PyTorch's own HOGWILD pattern
(``model.share_memory()`` + ``torch.multiprocessing`` processes) at the same worker count,
how soon does each reach a target test accuracy, and do they end at the same accuracy?

Modes (every one trains the spec's model on the same data, with the same per-epoch
partitioning and the same step code, :func:`raynn.hogwild.loop.train`):

``serial``
    raynn's serial baseline (``raynn run --serial``), one process with one torch thread; run
    once, as the ``workers = 1`` reference of ``speedup_vs_serial``.
``raynn``
    raynn HOGWILD on this machine (embedded Ray, started and stopped per run): W pinned
    single-thread worker actors on one shared-memory weight buffer, synced with a parameter
    server actor.
``torch``
    PyTorch's HOGWILD: the model's ``share_memory()`` weights trained by W ``spawn``-ed
    ``torch.multiprocessing`` processes of one thread each (not pinned), no Ray; the driver
    evaluates the shared weights every ``training.eval_every_seconds`` meanwhile, as raynn's
    driver evaluates the server's.
``torch_ray``
    ``torch`` again while an idle embedded Ray (started as raynn's run starts it) is up: the
    cost of Ray's mere presence (its daemons' timers and threads) to any training process on
    this machine. ``vs_torch_ray`` compares each mode with it; the bar stays ``vs_torch``.
``raynn_2node``
    raynn HOGWILD across a two-node :class:`ray.cluster_utils.Cluster` on this machine:
    ``ceil(W/2)`` workers on the head node and ``floor(W/2)`` on the second, each node with its
    own shared-memory buffer, synced through the parameter server. Needs W >= 2 (skipped at 1).

Throughput is ``samples / seconds``, where seconds run from the first worker's first step to
the last worker's end (start-up excluded; the serial baseline's in-loop evaluations
excluded too, as its own clock does). Time to target is the first evaluation of the global
weights at or above the target accuracy, in seconds since that first step.

Output: ``<output>/<spec>-<time>/`` with ``bench.json``, ``runs.parquet`` (one row per run),
``summary.parquet`` and ``summary.md`` (one row per mode and worker count, medians over
repeats), ``curves.parquet`` (test loss/accuracy over time of every run),
``loss_vs_time.png`` and ``modes/`` (the raynn run directories).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from raynn.bench.common import bench_folder, have_matplotlib, machine
from raynn.bench.hogwild_runs import (
    MODES,
    HogwildRun,
    parse_workers,
    run_raynn,
    run_two_node,
    say,
    spec_for,
    two_node_split,
)
from raynn.bench.hogwild_summary import (
    SUMMARY_COLUMNS,
    curves,
    plot_loss_vs_time,
    run_rows,
    summarize,
    to_markdown,
)
from raynn.bench.hogwild_torch import run_torch, run_torch_beside_ray
from raynn.errors import RaynnError
from raynn.placement.cores import usable_cpus
from raynn.runs.results import write_json
from raynn.spec.hogwild import HogwildSpec, hogwild_spec_from_dict

__all__ = [
    "MODES",
    "SUMMARY_COLUMNS",
    "HogwildRun",
    "bench_hogwild",
    "curves",
    "parse_workers",
    "plot_loss_vs_time",
    "run_rows",
    "summarize",
    "to_markdown",
    "two_node_split",
]


def _check(
    spec: HogwildSpec,
    workers: Sequence[int],
    modes: Sequence[str],
    target: float,
    epochs: int | None,
    repeats: int,
) -> list[int]:
    if not isinstance(spec, HogwildSpec):
        kind = getattr(spec, "kind", type(spec).__name__)
        raise RaynnError(
            f"raynn bench hogwild needs a kind: hogwild spec, got {kind}; "
            "use e.g. jobs/hogwild_digits.yaml"
        )
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise RaynnError(f"unknown bench mode(s) {unknown}; valid: {', '.join(MODES)}")
    counts = list(dict.fromkeys(workers))  # in order, once each
    bad = [w for w in counts if isinstance(w, bool) or not isinstance(w, int) or w < 1]
    if bad or not counts:
        raise RaynnError(
            f"--workers: {bad or 'none'} is not a list of worker counts; use positive "
            "integers, e.g. 1,2"
        )
    cores = len(usable_cpus())
    if max(counts) > cores:
        raise RaynnError(
            f"--workers: {max(counts)} is more than this machine's {cores} usable cores "
            f"(raynn pins one worker per core); use at most {cores}"
        )
    if not 0 < target <= 1:
        raise RaynnError(f"--target: {target} is not an accuracy; use a number in (0, 1]")
    if epochs is not None and (isinstance(epochs, bool) or epochs < 1):
        raise RaynnError(f"--epochs: {epochs} is not a number of epochs; use 1 or more")
    if repeats < 1:
        raise RaynnError(f"--repeats: {repeats}; use 1 or more")
    staleness = spec.hogwild.max_staleness
    if "raynn_2node" in modes and staleness is not None and staleness < 1:
        raise RaynnError(
            f"mode raynn_2node: spec key 'hogwild.max_staleness' is {staleness}, below nodes - 1 "
            "(1) for two nodes; set it to null or 1 or more, or leave raynn_2node out"
        )
    return counts


def bench_hogwild(
    spec: HogwildSpec,
    workers: Sequence[int] = (1, 2),
    modes: Sequence[str] = MODES,
    output: str | Path = "bench",
    target: float = 0.95,
    epochs: int | None = None,
    repeats: int = 1,
    progress: bool = True,
) -> tuple[pd.DataFrame, Path]:
    """Run ``spec`` in every mode at every worker count; write and return the summary.

    Args:
        spec: a ``kind: hogwild`` spec (its ``hogwild.workers_per_node`` is set per run).
        workers: worker counts, each at most this machine's usable cores.
        modes: a subset of :data:`MODES`.
        output: root of bench result folders.
        target: test accuracy whose first crossing is ``time_to_target_s``.
        epochs: overrides ``training.epochs``.
        repeats: runs of each configuration, interleaved; the summary holds medians.
        progress: print which mode is running, and each run's live view.

    Returns:
        The summary table (one row per mode and worker count) and the result folder.
    """
    counts = _check(spec, workers, modes, target, epochs, repeats)
    from raynn.core.data import load_dataset

    base = spec.to_dict()
    if epochs is not None:
        base["training"]["epochs"] = epochs
    spec = hogwild_spec_from_dict(base)
    data = load_dataset(spec.dataset)
    plan, skipped = _plan(modes, counts)
    out = bench_folder(output, spec.name)
    info = machine()
    setup = {"modes": list(modes), "workers": counts, "target": target, "repeats": repeats}
    _write_setup(out, spec, setup, skipped, info)
    runs: list[HogwildRun] = []
    total = len(plan) * repeats
    for r in range(repeats):  # interleaved, so load drift hits every mode alike
        for mode, w in plan:
            say(
                f"{len(runs) + 1}/{total}: {mode}, {w} worker(s)"
                + (f", repeat {r + 1}/{repeats}" if repeats > 1 else ""),
            )
            run = _run_mode(mode, w, r, base, out, data, progress)
            sps = run.samples / run.seconds if run.seconds > 0 else math.nan
            status = "done" if run.finished else f"NOT finished ({run.error})"
            say(f"{mode}, {w} worker(s): {status}, {sps:,.0f} samples/s")
            runs.append(run)
            # the tables so far: a bench cut short still leaves what it measured
            table = _write(runs, target, info, spec, out)
    if have_matplotlib("loss-versus-time plot"):
        plot_loss_vs_time(curves(runs), target, out / "loss_vs_time.png")
    return table, out


def _write_setup(
    out: Path, spec: HogwildSpec, setup: dict[str, Any], skipped: list[str], info: dict
) -> None:
    """``bench.json``: the spec, the bench's options (``setup``), how two nodes split each
    worker count, the runs skipped, the machine."""
    counts = setup["workers"]
    write_json(
        out / "bench.json",
        {
            "spec": spec.to_dict(),
            **setup,
            "two_node_split": {w: list(two_node_split(w)) for w in counts if w >= 2},
            "skipped": skipped,
            "machine": info,
        },
    )


def _plan(modes: Sequence[str], counts: list[int]) -> tuple[list[tuple[str, int]], list[str]]:
    """The runs of one repeat, ``(mode, workers)`` in order (``serial`` once, first), and
    the ones skipped (said as they are).

    Raises:
        RaynnError: nothing is left to run.
    """
    plan: list[tuple[str, int]] = [("serial", 1)] if "serial" in modes else []
    skipped = []
    for w in counts:
        for mode in modes:
            if mode == "serial":
                continue
            if mode == "raynn_2node" and w < 2:
                skipped.append(f"raynn_2node at {w} worker: needs at least one worker per node")
                continue
            plan.append((mode, w))
    for note in skipped:
        say(f"skipped {note}")
    if not plan:
        raise RaynnError(
            "nothing to run: raynn_2node needs --workers of 2 or more; add a worker count or mode"
        )
    return plan, skipped


def _run_mode(
    mode: str, w: int, r: int, base: dict, out: Path, data: Any, progress: bool
) -> HogwildRun:
    """One run of ``mode`` at ``w`` workers (repeat ``r``) of the spec ``base``."""
    if mode in ("serial", "raynn"):
        return run_raynn(spec_for(base, w), mode, w, r, out, data, progress)
    if mode == "torch":
        return run_torch(spec_for(base, w), w, r, data)
    if mode == "torch_ray":
        return run_torch_beside_ray(spec_for(base, w), w, r, data)
    return run_two_node(base, w, r, out, data, progress)


def _write(
    runs: list[HogwildRun], target: float, info: dict[str, Any], spec: HogwildSpec, out: Path
) -> pd.DataFrame:
    table = summarize(runs, target)
    run_rows(runs, target).to_parquet(out / "runs.parquet")
    curves(runs).to_parquet(out / "curves.parquet")
    table.to_parquet(out / "summary.parquet")
    (out / "summary.md").write_text(to_markdown(table, info, spec, target))
    return table
