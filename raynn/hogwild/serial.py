"""The serial baseline (``executor="serial"``): plain SGD in this process with the workers'
step code (:func:`raynn.hogwild.loop.train`), through one in-process parameter server (so
it checkpoints and resumes as a HOGWILD run does), evaluated on the same timer."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import torch

from raynn.core.optim import make_optimizer, make_schedule
from raynn.hogwild.evaluator import Evaluator
from raynn.hogwild.loop import LoopStats, build, make_loss, train
from raynn.hogwild.prepare import Outcome, Prepared, server_kwargs, start_epoch
from raynn.hogwild.server import ParameterServer
from raynn.hogwild.shared_params import flatten, load_flat
from raynn.hogwild.view import HogwildView
from raynn.hogwild.worker import utilization_rows, worker_row
from raynn.placement.cores import usable_cpus
from raynn.placement.monitor import UtilizationSampler


def run_serial(
    p: Prepared,
    run_dir: Path,
    threads: int | None,
    view: HogwildView,
    evaluator: Evaluator,
) -> Outcome:
    """Train ``p`` in this process with ``threads`` torch threads (default: every usable
    core), evaluating the server's weights every ``training.eval_every_seconds``.

    Returns:
        The worker row (``failed`` with the error if training raised), the utilization rows
        and the attempt's fields (workers, threads, start epoch, nodes, server stats, error).
    """
    spec = p.spec
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or len(usable_cpus()))
    node = socket.gethostname()
    server = ParameterServer(p.initial, **server_kwargs(spec, run_dir, 0, 0, p.param_count))
    server.start(["serial"])
    weights, version, _, samples0 = server.weights()
    first_epoch = start_epoch(samples0, len(p.data.y_train), spec.training.epochs)
    fields = {"workers": 1, "threads": torch.get_num_threads(), "start_epoch": first_epoch}
    fields["nodes"] = {node: usable_cpus()}
    model = build(spec, p.data)
    load_flat(model, weights)
    opt = make_optimizer(spec, model)
    per_epoch = -(-len(p.data.y_train) // spec.training.batch_size)
    schedule = make_schedule(spec, opt, per_epoch)
    evaluator.t0 = time.time()
    sampler = UtilizationSampler(node, spec.hogwild.sample_interval, own_tree=os.getpid())
    view.workers = 1
    sync = {"last": weights, "version": version, "seq": 0, "steps": 0, "samples": 0}
    every = spec.training.eval_every_seconds

    def push(stats: LoopStats) -> tuple[np.ndarray, int, int, int]:
        flat = flatten(model)
        payload = flat - sync["last"]
        payload[p.param_count :] = flat[p.param_count :]
        sync["seq"] += 1
        reply = server.push(
            "serial",
            sync["seq"],
            payload,
            sync["version"],
            stats.steps - sync["steps"],
            stats.samples - sync["samples"],
        )
        sync.update(last=reply.weights, version=reply.version)
        sync.update(steps=stats.steps, samples=stats.samples)
        return server.weights()

    next_eval = time.monotonic() + every

    def tick(stats: LoopStats) -> None:
        nonlocal next_eval
        if time.monotonic() < next_eval:
            return
        t0 = time.perf_counter()
        view.show(evaluator(*push(stats)))
        model.train()
        next_eval = time.monotonic() + every
        stats.excluded_seconds += time.perf_counter() - t0

    start = time.time()
    stats: LoopStats | None = None
    sampler.start()
    evaluator(weights, version, *server.weights()[2:])
    try:
        stats = train(
            model,
            opt,
            schedule,
            p.data,
            epochs=spec.training.epochs,
            batch_size=spec.training.batch_size,
            seed=spec.seed,
            start_epoch=first_epoch,
            after_step=tick,
            loss_fn=make_loss(spec, p.data),
        )
        view.show(evaluator(*push(stats), final=True))
        rows = [
            worker_row("serial", node, 0, "serial", None, fields["threads"], stats, None, start)
        ]
    except Exception as exc:
        fields["error"] = f"{type(exc).__name__}: {exc}"
        rows = [
            worker_row(
                "serial",
                node,
                0,
                "serial",
                None,
                fields["threads"],
                stats,
                None,
                start,
                status="failed",
                error=fields["error"],
            )
        ]
    finally:
        torch.set_num_threads(previous)
        util = utilization_rows(sampler)
        server.checkpoint()
    fields["servers"] = [server.stats()]
    return Outcome(rows, util, fields)
