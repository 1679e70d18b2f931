"""A HOGWILD spec made ready to run: its data and initial weights, checked before anything
starts; the server shard's settings and the epoch a (resumed) run starts at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raynn.core.data import ArrayDataset, load_dataset
from raynn.errors import SpecError
from raynn.hogwild.loop import build, make_loss
from raynn.hogwild.shared_params import flatten, param_numel
from raynn.placement.cores import usable_cpus
from raynn.spec.hogwild import HogwildSpec


@dataclass
class Prepared:
    """A validated spec with its data and initial weights."""

    spec: HogwildSpec
    data: ArrayDataset
    initial: np.ndarray
    param_count: int


def prepare(spec: HogwildSpec, data: ArrayDataset | None = None) -> Prepared:
    """Load the data (unless given) and build the model once; raise on anything invalid."""
    data = load_dataset(spec.dataset) if data is None else data
    try:
        model = build(spec, data)
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *data.in_shape))
    except Exception as exc:  # user model code: any error is a spec problem
        raise SpecError(
            f"spec key 'model': cannot build {spec.model.name!r} for input "
            f"{data.in_shape} and {data.num_classes} classes ({type(exc).__name__}: {exc}); "
            "check model.name and model.args"
        ) from None
    make_loss(spec, data)  # a bad training.loss fails here, before any worker starts
    initial = flatten(model)
    if spec.hogwild.server_shards > initial.size:
        raise SpecError(
            f"spec key 'hogwild.server_shards': {spec.hogwild.server_shards} shards for "
            f"{initial.size} weights; use fewer shards"
        )
    return Prepared(spec, data, initial, param_numel(model))


def validate(spec: HogwildSpec) -> str:
    """Check the spec, its dataset and its model without running; a one-line description."""
    p = prepare(spec)
    h, t = spec.hogwild, spec.training
    test = 0 if p.data.y_test is None else len(p.data.y_test)
    wpn = h.workers_per_node
    return (
        f"hogwild: {spec.model.label} ({p.param_count} params) on {p.data.name} "
        f"{p.data.in_shape}, {len(p.data.y_train)} train / {test} test samples; "
        f"{t.epochs} epochs, batch {t.batch_size}, {wpn} workers/node "
        f"(this machine: {len(usable_cpus())} cores), push every {h.push_every} steps, "
        f"max_staleness {h.max_staleness}, {h.server_shards} server shard(s)"
    )


def server_kwargs(spec: HogwildSpec, run_dir: Path, shard: int, lo: int, pc: int) -> dict:
    """The :class:`~raynn.hogwild.server.ParameterServer` arguments of shard ``shard``
    (starting at flat index ``lo``; ``pc`` parameters, the rest buffers)."""
    h = spec.hogwild
    return {
        "shard": shard,
        "lo": lo,
        "param_numel": pc,
        "checkpoint_path": str(run_dir / "checkpoints" / f"server-{shard}.ckpt"),
        "checkpoint_seconds": h.checkpoint_seconds,
        "max_staleness": h.max_staleness,
        "staleness_lr": h.staleness_lr,
    }


def start_epoch(samples: int, n_train: int, epochs: int) -> int:
    """The epoch training (re)starts at, given the samples the server has seen."""
    return min(samples // max(n_train, 1), epochs)


@dataclass
class Outcome:
    """What an attempt's training produced: the ``hogwild/`` rows (one per worker), the
    utilization rows and the fields it adds to the attempt's entry of ``run.json``.

    ``interrupted``: what cut training short (Ctrl-C, SIGTERM, Ray going down), None if
    nothing did; the rows and fields are then what it did until then, and the runner raises
    it once they are recorded (the attempt ends ``interrupted``, or ``failed`` with its error).
    """

    rows: list[dict]
    util: list[dict]
    fields: dict[str, Any]
    interrupted: BaseException | None = None
