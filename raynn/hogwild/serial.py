"""The serial baseline (``executor="serial"``): plain SGD in this process with the workers'
loop (:func:`raynn.hogwild.loop.train`), through one in-process parameter server (so it
checkpoints and resumes as a HOGWILD run does) and the same sync code as a node's
(:class:`~raynn.hogwild.node_sync.NodeSync`), evaluated on the same timer."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raynn.core.epochs import Callback, EpochLoop
from raynn.core.optim import make_optimizer, make_schedule
from raynn.hogwild.client import ServerClient
from raynn.hogwild.evaluator import Evaluator
from raynn.hogwild.loop import LoopStats, TrainContext, build, make_loss, train
from raynn.hogwild.node_sync import ModelWeights, NodeSync
from raynn.hogwild.prepare import Outcome, Prepared, server_kwargs, start_epoch
from raynn.hogwild.server import ParameterServer
from raynn.hogwild.shared_params import load_flat
from raynn.hogwild.view import HogwildView
from raynn.hogwild.worker import utilization_rows, worker_row
from raynn.placement.cores import usable_cpus
from raynn.placement.monitor import UtilizationSampler

NODE = "serial"  # the serial baseline's name on its server, and its worker's


class SerialSync(Callback):
    """The baseline's sync, a callback of the loop: every ``every`` seconds it pushes the
    model's steps to the server through :class:`NodeSync` (``fold=False``: the server mirrors
    the model) and evaluates the server's weights; that time is no training time."""

    def __init__(
        self,
        server: ParameterServer,
        model: torch.nn.Module,
        state: tuple[np.ndarray, int],
        param_count: int,
        every: float,
    ) -> None:
        self.server, self.model, self.every = server, model, every
        self.weights = ModelWeights(model)
        client = ServerClient([server], [(0, state[0].size)])
        self.sync = NodeSync(NODE, self.weights, client, *state, None, 0, param_count, fold=False)
        self.view: HogwildView | None = None
        self.evaluator: Evaluator | None = None
        self.next_eval = time.monotonic() + every

    def push(self, stats: LoopStats) -> tuple[np.ndarray, int, int, int]:
        """Push the model's steps so far; the server's weights, version, steps and samples."""
        self.weights.record(stats.steps, stats.samples)
        self.sync.push()
        return self.server.weights()

    def on_step_end(self, loop: EpochLoop) -> None:
        if time.monotonic() < self.next_eval:
            return
        assert self.view is not None and self.evaluator is not None
        stats: Any = loop.state
        t0 = time.perf_counter()
        self.view.show(self.evaluator(*self.push(stats)))
        self.model.train()
        self.next_eval = time.monotonic() + self.every
        stats.excluded_seconds += time.perf_counter() - t0


def _context(p: Prepared, weights: np.ndarray, first_epoch: int) -> TrainContext:
    """The baseline's loop: the run seed's model at the server's ``weights``, its optimizer
    and schedule, from ``first_epoch``."""
    spec = p.spec
    model = build(spec, p.data)
    load_flat(model, weights)
    opt = make_optimizer(spec, model)
    per_epoch = -(-len(p.data.y_train) // spec.training.batch_size)
    schedule = make_schedule(spec, opt, per_epoch)
    loss = make_loss(spec, p.data)
    return TrainContext.of(
        spec, model, opt, schedule, p.data, start_epoch=first_epoch, loss_fn=loss
    )


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
    server.start([NODE])
    weights, version, _, samples0 = server.weights()
    first_epoch = start_epoch(samples0, len(p.data.y_train), spec.training.epochs)
    fields = {"workers": 1, "threads": torch.get_num_threads(), "start_epoch": first_epoch}
    fields["nodes"] = {node: usable_cpus()}
    ctx = _context(p, weights, first_epoch)
    evaluator.t0 = time.time()
    sampler = UtilizationSampler(node, spec.hogwild.sample_interval, own_tree=os.getpid())
    view.workers = 1
    sync = SerialSync(
        server, ctx.model, (weights, version), p.param_count, spec.training.eval_every_seconds
    )
    sync.view, sync.evaluator = view, evaluator
    row = {"worker": NODE, "node": node, "slot": 0, "role": NODE, "core": None}
    row.update(threads=fields["threads"], start=time.time())
    stats: LoopStats | None = None
    sampler.start()
    evaluator(weights, version, *server.weights()[2:])
    try:
        stats = train(ctx, [sync])
        view.show(evaluator(*sync.push(stats), final=True))
        rows = [worker_row(**row, stats=stats)]
    except Exception as exc:
        fields["error"] = f"{type(exc).__name__}: {exc}"
        rows = [worker_row(**row, stats=stats, status="failed", error=fields["error"])]
    finally:
        torch.set_num_threads(previous)
        util = utilization_rows(sampler)
        server.checkpoint()
    fields["servers"] = [server.stats()]
    return Outcome(rows, util, fields)
