"""``raynn bench hogwild``: serial SGD, raynn HOGWILD and PyTorch's HOGWILD, side by side.

Question answered: how many training samples per second does raynn's HOGWILD get at 1, 2, ...
workers, against its own serial baseline and against PyTorch's own HOGWILD pattern
(``model.share_memory()`` + ``torch.multiprocessing`` processes) at the same worker count,
how soon does each reach a target test accuracy, and do they end at the same accuracy?

Modes (every one trains the spec's model on the same data, with the same per-epoch
partitioning and the same step code, :func:`raynn.hogwild.trainer.train`):

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

import copy
import math
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raynn.bench.common import (
    bench_folder,
    have_matplotlib,
    machine,
    machine_line,
    markdown_table,
)
from raynn.errors import RaynnError
from raynn.hogwild.spec import HogwildSpec, hogwild_spec_from_dict
from raynn.results import write_json
from raynn.scheduler.cores import usable_cpus

MODES = ("serial", "raynn", "torch", "torch_ray", "raynn_2node")
CURVE_COLUMNS = ["time", "loss", "accuracy", "final"]
SUMMARY_COLUMNS = [
    "mode",
    "workers",
    "finished",
    "samples",
    "seconds",
    "samples_per_second",
    "vs_torch",
    "vs_torch_min",
    "vs_torch_max",
    "vs_torch_ray",
    "speedup_vs_serial",
    "time_to_target_s",
    "final_accuracy",
    "final_loss",
    "startup_s",
]


@dataclass
class HogwildRun:
    """One run of one mode at one worker count: its counts, clocks and evaluation curve."""

    mode: str
    workers: int
    repeat: int
    invoked: float
    exited: float
    start: float  # first worker's first step
    end: float  # last worker's end
    samples: int
    seconds: float  # the throughput clock
    finished: bool
    curve: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CURVE_COLUMNS))
    run_dir: Path | None = None
    error: str | None = None


def _say(text: str) -> None:
    """One plain line per step of the bench, live view or not."""
    print(f"[bench hogwild] {text}", flush=True)


def parse_workers(text: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]``; anything but positive integers is a :class:`RaynnError`."""
    counts = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            value = 0
        if value < 1:
            raise RaynnError(
                f"--workers: {part!r} is not a worker count; use positive integers, e.g. 1,2"
            )
        counts.append(value)
    if not counts:
        raise RaynnError("--workers is empty; give worker counts, e.g. 1,2")
    return counts


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


def _spec_for(base: dict[str, Any], workers_per_node: int) -> HogwildSpec:
    raw = copy.deepcopy(base)
    raw["hogwild"]["workers_per_node"] = workers_per_node
    return hogwild_spec_from_dict(raw)


def _read_curve(run_dir: Path) -> pd.DataFrame:
    try:
        evals = pd.read_parquet(run_dir / "eval")
    except (OSError, ValueError):
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return evals.sort_values("time")[CURVE_COLUMNS].reset_index(drop=True)


def _from_result(
    mode: str, workers: int, repeat: int, result: Any, invoked: float, serial: bool = False
) -> HogwildRun:
    rows = result.jobs
    finished = result.status == "completed" and not rows.empty
    start = float(rows["start_time"].min()) if not rows.empty else invoked
    end = float(rows["end_time"].max()) if not rows.empty else time.time()
    # the serial baseline's own clock leaves out the evaluations it pauses for
    seconds = float(rows["seconds"].sum()) if serial else end - start
    errors = [e for e in rows.get("error", pd.Series(dtype=object)) if isinstance(e, str) and e]
    return HogwildRun(
        mode,
        workers,
        repeat,
        invoked,
        time.time(),
        start,
        end,
        int(rows["samples"].sum()) if not rows.empty else 0,
        seconds,
        finished,
        _read_curve(result.run_dir),
        result.run_dir,
        errors[0] if errors else None,
    )


# -- raynn: serial, one node, two nodes -------------------------------------------------------
def _run_raynn(
    spec: HogwildSpec,
    mode: str,
    workers: int,
    repeat: int,
    out: Path,
    data: Any,
    progress: bool,
) -> HogwildRun:
    from raynn.hogwild.runner import run

    where = out / "modes" / f"{mode}_w{workers}_r{repeat}"
    invoked = time.time()
    if mode == "serial":
        result = run(
            spec, executor="serial", output=str(where), progress=progress, threads=1, dataset=data
        )
        return _from_result(mode, workers, repeat, result, invoked, serial=True)
    result = run(spec, executor="ray", output=str(where), progress=progress, dataset=data)
    return _from_result(mode, workers, repeat, result, invoked)


def two_node_split(workers: int) -> tuple[int, int]:
    """Workers on the head node and on the second node of ``raynn_2node``."""
    return -(-workers // 2), workers // 2


def _run_two_node(
    base: dict[str, Any], workers: int, repeat: int, out: Path, data: Any, progress: bool
) -> HogwildRun:
    import ray
    from ray.cluster_utils import Cluster

    from raynn.hogwild.runner import run
    from raynn.scheduler.executor import LOCAL_RAY_SYSTEM_CONFIG

    head, second = two_node_split(workers)
    if ray.is_initialized():  # the cluster's driver connection must be the only one
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": head, "_system_config": LOCAL_RAY_SYSTEM_CONFIG},
    )
    try:
        cluster.add_node(num_cpus=second)
        cluster.wait_for_nodes()
        where = out / "modes" / f"raynn_2node_w{workers}_r{repeat}"
        invoked = time.time()  # the test cluster's own start is not raynn's
        result = run(
            _spec_for(base, head),
            executor="ray",
            address=cluster.address,
            output=str(where),
            progress=progress,
            dataset=data,
        )
        return _from_result("raynn_2node", workers, repeat, result, invoked)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


# -- PyTorch's HOGWILD ------------------------------------------------------------------------
def _torch_worker(
    rank: int,
    workers: int,
    model: Any,
    spec: HogwildSpec,
    data: Any,
    results: Any,
    go: Any,
) -> None:
    """One ``torch.multiprocessing`` process of PyTorch's HOGWILD, on raynn's batches.

    One thread, its own optimizer and schedule (as a raynn worker has), stepping the shared
    weights in place with raynn's loop. Puts ``("ready", rank)`` once set up, waits for
    ``go``, trains, and puts ``("done", rank, samples, start, end, error)``.
    """
    import torch

    from raynn.hogwild.trainer import make_optimizer, make_schedule, train

    start = time.time()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(spec.seed * 7919 + rank + 1)
        opt = make_optimizer(spec, model)
        per_epoch = math.ceil(len(data.y_train) / workers / spec.training.batch_size)
        schedule = make_schedule(spec, opt, per_epoch)
    except Exception as exc:
        results.put(("done", rank, 0, start, time.time(), f"{type(exc).__name__}: {exc}"))
        return
    results.put(("ready", rank))
    go.wait()  # every process started and set up: start together
    start = time.time()
    try:
        stats = train(
            model,
            opt,
            schedule,
            data,
            epochs=spec.training.epochs,
            batch_size=spec.training.batch_size,
            seed=spec.seed,
            worker=rank,
            workers=workers,
            label=f"torch process {rank}",
        )
    except Exception as exc:
        results.put(("done", rank, 0, start, time.time(), f"{type(exc).__name__}: {exc}"))
        return
    results.put(("done", rank, stats.samples, start, time.time(), None))


class _SharedEvaluator:
    """Evaluates a live (shared-memory) model on the test split with one thread, into rows."""

    def __init__(self, spec: HogwildSpec, data: Any) -> None:
        from raynn.hogwild.trainer import build, normalizer

        self.spec, self.data = spec, data
        self.model = build(spec, data)
        self.norm = normalizer(data)
        self.rows: list[dict[str, Any]] = []

    def __call__(self, shared: Any, final: bool = False) -> None:
        import torch

        from raynn.training import evaluate

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self.model.load_state_dict(shared.state_dict())  # a snapshot, as the server's
            d = self.data
            x, y = (d.x_test, d.y_test) if d.y_test is not None else (d.x_train, d.y_train)
            ev = evaluate(
                self.model, x, y, None, self.norm, d.num_classes, self.spec.training.eval_batch_size
            )
        finally:
            torch.set_num_threads(threads)
        self.rows.append(
            {"time": time.time(), "loss": ev.loss, "accuracy": ev.accuracy, "final": final}
        )


def _run_torch(spec: HogwildSpec, workers: int, repeat: int, data: Any) -> HogwildRun:
    import torch.multiprocessing as mp

    from raynn.hogwild.trainer import build

    invoked = time.time()
    model = build(spec, data)
    model.share_memory()
    evaluator = _SharedEvaluator(spec, data)
    ctx = mp.get_context("spawn")  # this process may also run Ray: never fork it
    results, go = ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(
            target=_torch_worker, args=(r, workers, model, spec, data, results, go), daemon=True
        )
        for r in range(workers)
    ]
    ready: set[int] = set()
    done: dict[int, tuple] = {}
    error = None
    every = spec.training.eval_every_seconds
    next_eval = math.inf  # no evaluations before the processes start training

    def receive(timeout: float) -> None:
        nonlocal error
        try:
            item = results.get(timeout=timeout)
        except queue.Empty:
            lost = [r for r, p in enumerate(procs) if p.exitcode is not None and r not in done]
            if not lost:
                return
            try:  # its last words may have reached the pipe just now
                item = results.get(timeout=1.0)
            except queue.Empty:  # exited without a word: a crash
                error = f"torch process {lost[0]} exited with code {procs[lost[0]].exitcode}"
                return
        if item[0] == "ready":
            ready.add(item[1])
        else:
            done[item[1]] = item[2:]
            if item[5] is not None:
                error = f"torch process {item[1]}: {item[5]}"

    try:
        for p in procs:
            p.start()
        while error is None and len(ready) < workers:
            receive(1.0)
        if error is None:
            go.set()
            evaluator(model)
            next_eval = time.monotonic() + every
        while error is None and len(done) < workers:
            receive(max(0.0, min(0.25, next_eval - time.monotonic())))
            if error is None and time.monotonic() >= next_eval:
                evaluator(model)
                next_eval = time.monotonic() + every
        finished = error is None and len(done) == workers
        if finished:  # every process reported its end: the weights are final
            evaluator(model, final=True)
        for p in procs:
            p.join(timeout=60 if error is None else 1)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)
    rows = list(done.values())  # (samples, start, end, error)
    start = min((g[1] for g in rows), default=invoked)
    end = max((g[2] for g in rows), default=time.time())
    return HogwildRun(
        "torch",
        workers,
        repeat,
        invoked,
        time.time(),
        start,
        end,
        sum(g[0] for g in rows),
        end - start,
        finished,
        pd.DataFrame(evaluator.rows, columns=CURVE_COLUMNS),
        None,
        error,
    )


def _run_torch_beside_ray(spec: HogwildSpec, workers: int, repeat: int, data: Any) -> HogwildRun:
    """``torch`` mode while an idle embedded Ray, started as raynn's executor starts it, is up."""
    from raynn.scheduler.executor import RayExecutor

    executor = RayExecutor()
    executor.prepare(1, 1)  # starts the embedded Ray (or joins RAY_ADDRESS's cluster)
    try:
        run = _run_torch(spec, workers, repeat, data)
    finally:
        executor.close()
    run.mode = "torch_ray"
    return run


# -- summary ----------------------------------------------------------------------------------
def _time_to_target(run: HogwildRun, target: float) -> float:
    c = run.curve
    hit = c[c["accuracy"] >= target] if not c.empty else c
    if hit.empty:
        return math.nan
    return max(0.0, float(hit["time"].iloc[0]) - run.start)


def _final(run: HogwildRun, column: str) -> float:
    c = run.curve
    final = c[c["final"].astype(bool)] if not c.empty else c
    return float(final[column].iloc[-1]) if not final.empty else math.nan


def run_rows(runs: Sequence[HogwildRun], target: float) -> pd.DataFrame:
    """One row per run: counts, clocks, throughput, time to ``target``, final metrics."""
    rows = []
    for r in runs:
        sps = r.samples / r.seconds if r.finished and r.seconds > 0 else math.nan
        rows.append(
            {
                "mode": r.mode,
                "workers": r.workers,
                "repeat": r.repeat,
                "finished": r.finished,
                "samples": r.samples,
                "seconds": r.seconds,
                "samples_per_second": sps,
                "time_to_target_s": _time_to_target(r, target),
                "final_accuracy": _final(r, "accuracy"),
                "final_loss": _final(r, "loss"),
                "startup_s": r.start - r.invoked,
                "wall_s": r.exited - r.invoked,
                "error": r.error,
                "run_dir": str(r.run_dir) if r.run_dir else None,
            }
        )
    return pd.DataFrame(rows)


def _median(values: pd.Series) -> float:
    """The median, where NaN (never reached, not finished) counts as worst."""
    v = values.astype(float).fillna(math.inf)
    m = float(np.median(v.to_numpy())) if len(v) else math.nan
    return math.nan if math.isinf(m) else m


def summarize(runs: Sequence[HogwildRun], target: float) -> pd.DataFrame:
    """One row per (mode, workers): medians over repeats, ``vs_torch``, ``speedup_vs_serial``."""
    per_run = run_rows(runs, target)
    rows = []
    for (mode, workers), g in per_run.groupby(["mode", "workers"], sort=False):
        row: dict[str, Any] = {
            "mode": mode,
            "workers": int(workers),
            "repeats": len(g),
            "finished": bool(g["finished"].all()),
            "samples": int(g["samples"].median()),
        }
        for col in [
            "seconds",
            "samples_per_second",
            "time_to_target_s",
            "final_accuracy",
            "final_loss",
            "startup_s",
            "wall_s",
        ]:
            worst_nan = col in ("samples_per_second", "time_to_target_s")
            row[col] = _median(g[col]) if worst_nan else float(g[col].median())
        rows.append(row)
    table = pd.DataFrame(rows)
    for peer in ("torch", "torch_ray"):
        sps = table[table["mode"] == peer].set_index("workers")["samples_per_second"]
        table[f"vs_{peer}"] = [
            row.samples_per_second / sps[row.workers] if row.workers in sps else math.nan
            for row in table.itertuples()
        ]
    # the spread: each repeat against torch's run of the same repeat (they ran back to back)
    torch_runs = per_run[per_run["mode"] == "torch"].set_index(["workers", "repeat"])
    spread: dict[tuple[str, int], list[float]] = {}
    for r in per_run.itertuples():
        if (r.workers, r.repeat) in torch_runs.index:
            ref = torch_runs.loc[(r.workers, r.repeat), "samples_per_second"]
            spread.setdefault((r.mode, r.workers), []).append(r.samples_per_second / ref)
    keys = list(zip(table["mode"], table["workers"], strict=True))
    table["vs_torch_min"] = [min(spread.get(k, [math.nan])) for k in keys]
    table["vs_torch_max"] = [max(spread.get(k, [math.nan])) for k in keys]
    serial = table.loc[table["mode"] == "serial", "samples_per_second"]
    table["speedup_vs_serial"] = (
        table["samples_per_second"] / float(serial.iloc[0]) if not serial.empty else math.nan
    )
    return table[[*SUMMARY_COLUMNS, "repeats", "wall_s"]]


def curves(runs: Sequence[HogwildRun]) -> pd.DataFrame:
    """Every run's evaluations, with ``seconds`` since its first step."""
    parts = []
    for r in runs:
        if r.curve.empty:
            continue
        c = r.curve.copy()
        c.insert(0, "repeat", r.repeat)
        c.insert(0, "workers", r.workers)
        c.insert(0, "mode", r.mode)
        c["seconds"] = c["time"] - r.start
        c["final"] = c["final"].astype(bool)
        parts.append(c)
    if not parts:
        return pd.DataFrame(columns=["mode", "workers", "repeat", *CURVE_COLUMNS, "seconds"])
    return pd.concat(parts, ignore_index=True)


def plot_loss_vs_time(curve: pd.DataFrame, target: float, path: Path) -> None:
    """Test loss (top) and accuracy (bottom) against seconds, one line per mode x workers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    first = curve[curve["repeat"] == curve["repeat"].min()] if not curve.empty else curve
    for (mode, workers), g in first.groupby(["mode", "workers"], sort=False):
        label = f"{mode}, {workers} worker{'s' if workers > 1 else ''}"
        top.plot(g["seconds"], g["loss"], marker=".", lw=1.2, label=label)
        bottom.plot(g["seconds"], g["accuracy"], marker=".", lw=1.2, label=label)
    bottom.axhline(target, ls="--", color="grey", lw=0.8)
    top.set(ylabel="test loss", title="HOGWILD: global weights on the test split")
    if not first.empty and (first["loss"] > 0).all():
        top.set_yscale("log")
    bottom.set(xlabel="seconds since the first step", ylabel="test accuracy", ylim=(0, 1.02))
    if not first.empty:
        top.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def to_markdown(table: pd.DataFrame, info: dict[str, Any], spec: HogwildSpec, target: float) -> str:
    """The summary as a markdown section."""
    t = spec.training
    lines = [
        f"### `{spec.name}`: HOGWILD, {spec.model.label} on {spec.dataset.name}, "
        f"{t.epochs} epochs, batch {t.batch_size}, target accuracy {target:g}, "
        f"{info['cores']} cores",
        "",
        machine_line(info),
        "",
        *markdown_table(table, SUMMARY_COLUMNS, {"samples_per_second": "{:.0f}"}),
    ]
    return "\n".join(lines) + "\n"


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
    from raynn.data import load_dataset

    base = spec.to_dict()
    if epochs is not None:
        base["training"]["epochs"] = epochs
    spec = hogwild_spec_from_dict(base)
    data = load_dataset(spec.dataset)
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
        _say(f"skipped {note}")
    if not plan:
        raise RaynnError(
            "nothing to run: raynn_2node needs --workers of 2 or more; add a worker count or mode"
        )
    out = bench_folder(output, spec.name)
    info = machine()
    write_json(
        out / "bench.json",
        {
            "spec": spec.to_dict(),
            "modes": list(modes),
            "workers": counts,
            "target": target,
            "repeats": repeats,
            "two_node_split": {w: list(two_node_split(w)) for w in counts if w >= 2},
            "skipped": skipped,
            "machine": info,
        },
    )
    runs: list[HogwildRun] = []
    total = len(plan) * repeats
    for r in range(repeats):  # interleaved, so load drift hits every mode alike
        for mode, w in plan:
            _say(
                f"{len(runs) + 1}/{total}: {mode}, {w} worker(s)"
                + (f", repeat {r + 1}/{repeats}" if repeats > 1 else ""),
            )
            if mode in ("serial", "raynn"):
                run = _run_raynn(_spec_for(base, w), mode, w, r, out, data, progress)
            elif mode == "torch":
                run = _run_torch(_spec_for(base, w), w, r, data)
            elif mode == "torch_ray":
                run = _run_torch_beside_ray(_spec_for(base, w), w, r, data)
            else:
                run = _run_two_node(base, w, r, out, data, progress)
            sps = run.samples / run.seconds if run.seconds > 0 else math.nan
            status = "done" if run.finished else f"NOT finished ({run.error})"
            _say(f"{mode}, {w} worker(s): {status}, {sps:,.0f} samples/s")
            runs.append(run)
            # the tables so far: a bench cut short still leaves what it measured
            table = _write(runs, target, info, spec, out)
    if have_matplotlib("loss-versus-time plot"):
        plot_loss_vs_time(curves(runs), target, out / "loss_vs_time.png")
    return table, out


def _write(
    runs: list[HogwildRun], target: float, info: dict[str, Any], spec: HogwildSpec, out: Path
) -> pd.DataFrame:
    table = summarize(runs, target)
    run_rows(runs, target).to_parquet(out / "runs.parquet")
    curves(runs).to_parquet(out / "curves.parquet")
    table.to_parquet(out / "summary.parquet")
    (out / "summary.md").write_text(to_markdown(table, info, spec, target))
    return table
