"""The job list of a K-fold spec: models x schedulers x folds, with seeds and costs.

A job's seed derives from (run seed, model, scheduler, fold) only, so the same job gives the
same metrics wherever and whenever it runs. Jobs are ordered longest-expected-first (LPT) by
a cost model: multiply-accumulates of one forward pass x training samples x epochs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raynn.core.model_builder import build_model
from raynn.spec import Component, KFoldSpec, OptimizerSpec, TrainingSpec

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


def job_seed(run_seed: int, model: str, scheduler: str, fold: int) -> int:
    """A 31-bit seed from the run seed and the job's identity."""
    digest = hashlib.sha256(f"{run_seed}/{model}/{scheduler}/{fold}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


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


def make_jobs(
    spec: KFoldSpec, in_shape: tuple[int, int, int], num_classes: int, train_samples: int
) -> list[Job]:
    """All jobs of ``spec``, longest expected first (ties keep grid order)."""
    import torch

    costs: dict[str, float] = {}
    for model in spec.models:
        torch.manual_seed(0)
        macs = forward_macs(build_model(model, in_shape, num_classes), in_shape)
        # forward + backward ~ 3x forward, over every training sample of every epoch
        costs[model.label] = 3.0 * macs * train_samples * spec.training.epochs
    jobs = []
    for model in spec.models:
        for sched in spec.schedulers:
            for fold in range(spec.folds):
                jobs.append(
                    Job(
                        job_id=f"{model.label}-{sched.label}-f{fold}",
                        index=len(jobs),
                        model=model,
                        scheduler=sched,
                        fold=fold,
                        seed=job_seed(spec.seed, model.label, sched.label, fold),
                        optimizer=spec.optimizer,
                        training=spec.training,
                        cost=costs[model.label],
                        keep_model=getattr(spec.output, "keep_models", "none") != "none",
                    )
                )
    return sorted(jobs, key=lambda j: (-j.cost, j.index))
