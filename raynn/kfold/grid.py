"""The job list of a K-fold spec: configurations x folds, with seeds and costs.

A configuration is a model, a scheduler and one set of searched values
(:func:`raynn.spec.search.configurations`). A job's seed derives from (run seed,
configuration id, fold) only, so the same job gives the same metrics wherever and whenever it
runs; a spec without search domains has the configuration ids ``model/scheduler``, so its
job ids and seeds are those of a plain model x scheduler grid. Jobs are ordered
longest-expected-first (LPT) by a cost model: multiply-accumulates of one forward pass x
training samples x epochs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raynn.core.model_builder import build_model
from raynn.spec import Component, KFoldSpec, OptimizerSpec, TrainingSpec
from raynn.spec.checks import to_plain
from raynn.spec.search import Configuration, cell, columns, configurations

if TYPE_CHECKING:  # torch is imported where models are built, not where jobs are queued
    import torch
    from torch import nn


@dataclass(frozen=True)
class Job:
    """One unit of work: train ``model`` with ``scheduler`` on fold ``fold``."""

    job_id: str
    index: int
    model: Component
    scheduler: Component
    fold: int
    seed: int
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    cost: float = 0.0
    max_threads: int = 0  # most threads worth giving this job (0 = no limit known)
    cores: int = 0  # cores to run on (0: the worker's group); set by ``cores_per_job: auto``
    keep_model: bool = False  # return the trained weights with the result (output.keep_models)
    config: str = ""  # the configuration's id (``model/scheduler[/key=value,...]``)
    # the searched keys as table columns: (column, Arrow type, value) for every column of
    # the space (None where a key is another model's)
    columns: tuple[tuple[str, str, object], ...] = ()

    def __post_init__(self) -> None:
        if not self.config:
            object.__setattr__(self, "config", f"{self.model.label}/{self.scheduler.label}")


def job_seed(run_seed: int, config: str, fold: int) -> int:
    """A 31-bit seed from the run seed and the job's identity: its configuration's id
    (``model/scheduler`` without searched values) and fold."""
    digest = hashlib.sha256(f"{run_seed}/{config}/{fold}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def job_id(config: Configuration, fold: int) -> str:
    """``model-scheduler-f<fold>``, with the configuration's key before the fold where it
    has searched values (``mlp-cosine-1a2b3c4d-f0``)."""
    key = f"-{config.key}" if config.values else ""
    return f"{config.model.label}-{config.scheduler.label}{key}-f{fold}"


def forward_macs(model: nn.Module, in_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass of one sample (conv and linear layers)."""
    import torch
    from torch import nn

    total = 0

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += out.numel() * k
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *in_shape))
    finally:
        for h in handles:
            h.remove()
    return total


def _costs(
    configs: list[Configuration], in_shape: tuple[int, int, int], num_classes: int,
    train_samples: int,
) -> dict[str, float]:  # fmt: skip
    """Each configuration's expected cost: 3x forward MACs x samples x epochs (one model
    built per distinct model entry and args)."""
    import json

    import torch

    macs: dict[str, int] = {}
    out = {}
    for config in configs:
        model = config.model
        token = json.dumps([model.label, to_plain(dict(model.args))], default=str)
        if token not in macs:
            torch.manual_seed(0)
            macs[token] = forward_macs(build_model(model, in_shape, num_classes), in_shape)
        # forward + backward ~ 3x forward, over every training sample of every epoch
        out[config.id] = 3.0 * macs[token] * train_samples * config.training.epochs
    return out


def make_jobs(
    spec: KFoldSpec, in_shape: tuple[int, int, int], num_classes: int, train_samples: int,
    configs: list[Configuration] | None = None,
) -> list[Job]:  # fmt: skip
    """All jobs of ``spec`` (of ``configs``, its configurations, if given), longest expected
    first (ties keep grid order)."""
    configs = configurations(spec) if configs is None else configs
    costs = _costs(configs, in_shape, num_classes, train_samples)
    names = [(c.name, c.type) for c in columns(spec)]
    keep = getattr(spec.output, "keep_models", "none") != "none"
    jobs = []
    for config in configs:
        values = dict(config.values)
        cells = tuple((n, t, cell(t, values.get(n))) for n, t in names)
        for fold in range(spec.folds):
            jobs.append(
                Job(
                    job_id=job_id(config, fold),
                    index=len(jobs),
                    model=config.model,
                    scheduler=config.scheduler,
                    fold=fold,
                    seed=job_seed(spec.seed, config.id, fold),
                    optimizer=config.optimizer,
                    training=config.training,
                    cost=costs[config.id],
                    keep_model=keep,
                    config=config.id,
                    columns=cells,
                )
            )
    return sorted(jobs, key=lambda j: (-j.cost, j.index))
