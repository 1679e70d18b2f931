"""PyTorch's own HOGWILD in ``raynn bench hogwild``: ``model.share_memory()`` weights trained
by ``spawn``-ed ``torch.multiprocessing`` processes on raynn's batches, evaluated by the driver
as raynn's driver evaluates the server's (:class:`raynn.hogwild.evaluator.Evaluator`)."""

from __future__ import annotations

import math
import queue
import time
from typing import Any

import pandas as pd

from raynn.bench.hogwild_runs import CURVE_COLUMNS, HogwildRun
from raynn.spec.hogwild import HogwildSpec


def torch_worker(
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

    from raynn.core.optim import make_optimizer, make_schedule
    from raynn.hogwild.loop import TrainContext, train

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
        where = {"worker": rank, "workers": workers, "label": f"torch process {rank}"}
        stats = train(TrainContext.of(spec, model, opt, schedule, data, **where))
    except Exception as exc:
        results.put(("done", rank, 0, start, time.time(), f"{type(exc).__name__}: {exc}"))
        return
    results.put(("done", rank, stats.samples, start, time.time(), None))


class _Processes:
    """The ``torch`` mode's processes and what they said: which are ready, each one's
    ``(samples, start, end, error)`` once done, and the first error."""

    def __init__(self, ctx: Any, workers: int, model: Any, spec: HogwildSpec, data: Any) -> None:
        self.workers = workers
        self.results, self.go = ctx.Queue(), ctx.Event()
        self.procs = [
            ctx.Process(
                target=torch_worker,
                args=(r, workers, model, spec, data, self.results, self.go),
                daemon=True,
            )
            for r in range(workers)
        ]
        self.ready: set[int] = set()
        self.done: dict[int, tuple] = {}
        self.error: str | None = None

    def receive(self, timeout: float) -> None:
        """Take one message (or notice a process that exited without one) within ``timeout``."""
        try:
            item = self.results.get(timeout=timeout)
        except queue.Empty:
            procs = self.procs
            lost = [r for r, p in enumerate(procs) if p.exitcode is not None and r not in self.done]
            if not lost:
                return
            try:  # its last words may have reached the pipe just now
                item = self.results.get(timeout=1.0)
            except queue.Empty:  # exited without a word: a crash
                self.error = f"torch process {lost[0]} exited with code {procs[lost[0]].exitcode}"
                return
        if item[0] == "ready":
            self.ready.add(item[1])
        else:
            self.done[item[1]] = item[2:]
            if item[5] is not None:
                self.error = f"torch process {item[1]}: {item[5]}"

    def train(self, model: Any, evaluator: Any, every: float) -> bool:
        """Start the processes, let them go together once all are set up, evaluate the shared
        weights every ``every`` seconds until all are done; whether every one finished."""
        from raynn.hogwild.shared_params import flatten

        for p in self.procs:
            p.start()
        while self.error is None and len(self.ready) < self.workers:
            self.receive(1.0)
        next_eval = math.inf  # no evaluations before the processes start training
        if self.error is None:
            self.go.set()
            evaluator(flatten(model))
            next_eval = time.monotonic() + every
        while self.error is None and len(self.done) < self.workers:
            self.receive(max(0.0, min(0.25, next_eval - time.monotonic())))
            if self.error is None and time.monotonic() >= next_eval:
                evaluator(flatten(model))
                next_eval = time.monotonic() + every
        finished = self.error is None and len(self.done) == self.workers
        if finished:  # every process reported its end: the weights are final
            evaluator(flatten(model), final=True)
        for p in self.procs:
            p.join(timeout=60 if self.error is None else 1)
        return finished

    def terminate(self) -> None:
        """End the processes still alive."""
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)


def run_torch(spec: HogwildSpec, workers: int, repeat: int, data: Any) -> HogwildRun:
    """Mode ``torch``: ``workers`` processes on the shared model; the driver evaluates its
    weights every ``training.eval_every_seconds`` and once all have finished."""
    import torch.multiprocessing as mp

    from raynn.hogwild.evaluator import Evaluator
    from raynn.hogwild.loop import build

    invoked = time.time()
    model = build(spec, data)
    model.share_memory()
    evaluator = Evaluator(spec, data)  # a snapshot of the shared weights, as the server's
    # this process may also run Ray: never fork it
    group = _Processes(mp.get_context("spawn"), workers, model, spec, data)
    try:
        finished = group.train(model, evaluator, spec.training.eval_every_seconds)
    finally:
        group.terminate()
    rows = list(group.done.values())  # (samples, start, end, error)
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
        group.error,
    )


def run_torch_beside_ray(spec: HogwildSpec, workers: int, repeat: int, data: Any) -> HogwildRun:
    """``torch`` mode while an idle embedded Ray, started as raynn's runs start it, is up."""
    from raynn.placement import session

    started = session.connect()  # starts the embedded Ray (or joins RAY_ADDRESS's cluster)
    try:
        run = run_torch(spec, workers, repeat, data)
    finally:
        session.shutdown_if_started(started)
    run.mode = "torch_ray"
    return run
