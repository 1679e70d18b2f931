"""Trained weights in a run directory (``output.keep_models``, ``output.refit``) and loading them.

::

    models/<file_stem(job_id)>.pt   a job's final weights (keep_models: best or all)
    models/refit.pt                 the best configuration retrained on all training data

A job's file is written by the results collector, on the driver's node, from the bytes its
worker returned with the result and before the job's row: a job with an ok row has its file
(:func:`raynn.kfold.train.model_file` says what it holds). Which configuration is best is
known only when every job has finished, so every job keeps its file while the run goes on;
``keep_models: best`` then deletes the files of the other configurations, once every job
of the run has an ok row (a run with jobs still to do keeps them all, so a resume that
changes the ranking still finds the new best's folds).

:func:`load_model` returns a ready module: the trained network behind the normalisation it
was trained with, so it takes images as raynn's arrays hold them.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raynn.errors import RaynnError
from raynn.runs.files import check_no_links, file_stem, read_bytes
from raynn.runs.record import RunRecord
from raynn.spec import KFoldSpec

MODELS_DIR = "models"
REFIT = "refit"


class TrainedModel(nn.Module):
    """A trained network behind raynn's input normalisation.

    ``forward(x)`` takes a batch of images as raynn trained on them: shape ``(N, C, H, W)``,
    values 0..255 (a ``uint8`` tensor or numpy array, as :func:`raynn.core.data.load_dataset`
    returns and ``AsyncKFold`` made of your dataset; floats in the same 0..255 range work
    too), and returns the network's output (logits, or log-probabilities for ``nll``). It
    computes ``(x / 255 - mean) / std`` per channel exactly as training did
    (:class:`raynn.core.data.Normalizer`), so the same images give the same outputs.

    Attributes:
        net: the network itself (it takes normalised float inputs).
        info: what the file says of the job (job id, model, scheduler, fold, metrics, ...).
    """

    def __init__(self, net: nn.Module, mean: list[float], std: list[float], info: dict) -> None:
        super().__init__()
        self.net = net
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * s))
        self.register_buffer("shift", -m / s)
        self.info = info

    def forward(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        out = torch.empty(x.shape, dtype=torch.float32)
        return self.net(out.copy_(x).mul_(self.scale).add_(self.shift))


def model_path(run_dir: str | os.PathLike[str], job_id: str) -> Path:
    """Where the weights of ``job_id`` (or ``"refit"``) are kept in ``run_dir``."""
    name = REFIT if job_id == REFIT else file_stem(job_id)
    return Path(run_dir) / MODELS_DIR / f"{name}.pt"


def best_configuration(table: Any, order: Sequence[str]) -> dict[str, Any] | None:
    """The configuration with the highest mean ``val_accuracy`` over its ok folds, of those
    in ``order`` (configuration ids, grid order) that were not raced out.

    Ties go to the first in ``order``. Returns ``{"config", "model", "scheduler",
    "mean_val_accuracy", "folds", "jobs"}`` (the id, the labels and the job ids of its ok
    folds), or None when no job is ok.
    """
    from raynn.kfold.racing import with_config
    from raynn.kfold.rows import RACED_OUT

    if not len(table):
        return None
    table = with_config(table)
    raced = set(table.loc[table["status"] == RACED_OUT, "config"])
    ok = table[(table["status"] == "ok") & ~table["config"].isin(raced)]
    means = ok.groupby("config")["val_accuracy"].mean()
    best: dict[str, Any] | None = None
    for config in order:
        if config not in means.index:
            continue
        mean, rows = float(means[config]), ok[ok["config"] == config]
        if best is None or (not math.isnan(mean) and mean > best["mean_val_accuracy"]):
            best = {
                "config": config,
                "model": str(rows["model"].iloc[0]),
                "scheduler": str(rows["scheduler"].iloc[0]),
                "mean_val_accuracy": mean,
                "folds": int(len(rows)),
                "jobs": sorted(rows["job_id"]),
            }
    return best


def refit_best(spec: KFoldSpec, plan: Any, best: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train the best configuration once more on every training sample (no validation: its
    schedule sees the training loss), in the driver with every usable core; save it as
    ``models/refit.pt``. ``plan``: the run's :class:`raynn.kfold.runner.Plan`. Returns what
    run.json records of it."""
    import copy
    from dataclasses import replace

    from raynn.kfold.grid import job_seed
    from raynn.kfold.train import train_job
    from raynn.placement.cores import usable_cpus
    from raynn.runs.files import write_bytes

    fold0 = next(j for j in plan.jobs if j.config == best["config"])
    data = copy.copy(plan.data)
    n = len(data.y_train)
    data.folds = [(np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64))]
    job = replace(
        fold0,
        job_id=f"{fold0.job_id.rsplit('-f', 1)[0]}-{REFIT}",
        index=-1,
        fold=0,
        seed=job_seed(spec.seed, fold0.config, -1),
        keep_model=True,
    )
    threads = torch.get_num_threads()
    try:
        result = train_job(job, data, threads=len(usable_cpus()))
    finally:
        torch.set_num_threads(threads)
    out: dict[str, Any] = {
        "job_id": job.job_id,
        "config": job.config,
        "model": job.model.label,
        "scheduler": job.scheduler.label,
        "seed": job.seed,
        "samples": n,
        "status": result.status,
        "train_seconds": result.train_seconds,
        "loss": result.history[-1].loss if result.history else None,
        "test_loss": result.test_loss,
        "test_accuracy": result.test_accuracy,
    }
    if result.status == "ok" and result.model_state is not None:
        write_bytes(model_path(run_dir, REFIT), result.model_state)
        out["file"] = f"models/{REFIT}.pt"
    else:
        out["error"] = result.error
    return out


def keep_models(
    spec: KFoldSpec, plan: Any, record: RunRecord, table: Any, attempt: dict[str, Any]
) -> None:
    """``output.keep_models`` and ``output.refit`` once the jobs are done: find the best
    configuration, delete the other configurations' files (``best``, and only once every
    job of the run has an ok row), retrain the best (``refit``), record it all in run.json.
    ``plan``: the run's :class:`raynn.kfold.runner.Plan`.
    """
    from raynn.kfold.rows import FINAL

    run_dir, meta = record.run_dir, record.meta
    keep = getattr(spec.output, "keep_models", "none")
    refit = getattr(spec.output, "refit", False)
    if keep == "none" and not refit:
        return
    best = best_configuration(table, [c.id for c in plan.configs])  # ties: grid order
    ok = set(table.loc[table["status"].isin(FINAL), "job_id"]) if len(table) else set()
    all_ok = {j.job_id for j in plan.jobs} <= ok  # raced-out folds are final too
    kept: dict[str, Any] = {"keep": keep, "dir": MODELS_DIR, "best": best}
    if keep == "best" and best is not None and all_ok:
        winners = set(best["jobs"])
        for job in plan.jobs:
            if job.job_id not in winners:
                model_path(run_dir, job.job_id).unlink(missing_ok=True)
    elif keep == "best":
        kept["pending"] = (
            "not every job has an ok row yet: every job's file is kept until a resume finishes them"
        )
    folder = run_dir / MODELS_DIR
    kept["files"] = sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []
    meta["models"] = kept
    record.save()
    if refit and best is not None and attempt["status"] == "completed" and all_ok:
        if not model_path(run_dir, REFIT).exists():  # a resume keeps the one it has
            meta["refit"] = refit_best(spec, plan, best, run_dir)
            kept["files"] = sorted(p.name for p in folder.glob("*.pt"))
            record.save()


def _read(path: Path) -> dict[str, Any]:
    try:
        blob = read_bytes(path)  # never through a symlink
    except OSError as exc:
        raise RaynnError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    try:
        state = torch.load(io.BytesIO(blob), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise RaynnError(
            f"model file {path} is not readable ({type(exc).__name__}); train the job again"
        ) from None
    if not isinstance(state, dict) or state.get("format") != "raynn-model/1":
        raise RaynnError(f"{path} is not a raynn model file (format raynn-model/1)")
    return state


def _default_job(run_dir: Path) -> str:
    """The refit model if there is one, else the best configuration's best fold."""
    if model_path(run_dir, REFIT).exists():
        return REFIT
    try:
        meta = json.loads(read_bytes(run_dir / "run.json"))
    except (OSError, ValueError) as exc:
        raise RaynnError(
            f"{run_dir} has no readable run.json ({exc}); pass a run directory of 'raynn run'"
        ) from None
    best = (meta.get("models") or {}).get("best")
    if not best:
        raise RaynnError(
            f"{run_dir} kept no models (output.keep_models: "
            f"{meta.get('spec', {}).get('output', {}).get('keep_models', 'none')}); run with "
            "output.keep_models: best (or all) to keep the trained weights"
        )
    from raynn.runs.results import read_table

    table = read_table(run_dir, "jobs")
    rows = table[table["job_id"].isin(best["jobs"])].sort_values(
        ["val_accuracy", "job_id"], ascending=[False, True]
    )
    for job_id in rows["job_id"]:
        if model_path(run_dir, job_id).exists():
            return str(job_id)
    raise RaynnError(
        f"{run_dir}: the best configuration's model files are missing from {MODELS_DIR}/; "
        "run the spec again with output.keep_models: best"
    )


def load_model(
    run_dir: str | os.PathLike[str],
    job_id: str | None = None,
    *,
    factory: Callable[..., nn.Module] | Mapping[str, Callable[..., nn.Module]] | None = None,
) -> TrainedModel:
    """A trained model of a run, ready to predict (eval mode).

    Args:
        run_dir: the run directory.
        job_id: the job whose weights to load, or ``"refit"``; None: the refit model if
            the run has one, else the fold of the best configuration with the highest
            validation accuracy.
        factory: builds the network when the run's model came from a Python factory (the
            seed API's model classes): a class is called as AsyncKFold calls it
            (``num_classes=`` when it takes it), anything else as ``factory(in_shape,
            num_classes, **args)``. Models named in a spec (built-ins, ``pkg.mod:factory``)
            need none. A mapping picks the factory by the model's label.

    Returns:
        A :class:`TrainedModel`: ``model(x)`` takes ``uint8`` images ``(N, C, H, W)`` as
        raynn's arrays hold them (e.g. ``load_dataset(spec.dataset).x_test``) and returns
        the network's output; ``model.info`` has the job id, model, fold and metrics.

    Raises:
        RaynnError: no such model file, an unreadable one, or a Python-built model without
            ``factory``.
    """
    from raynn.core.model_builder import build_model
    from raynn.spec import Component

    path = _model_file(Path(run_dir), job_id)
    state = _read(path)
    spec_model = state["model"]
    if isinstance(factory, Mapping):  # one per model label (AsyncKFold passes its models')
        factory = factory.get(spec_model["label"])
    if spec_model.get("python_factory") and factory is None:
        raise RaynnError(
            f"model {spec_model['label']!r} of {path.name} was built by a Python factory; "
            "pass load_model(..., factory=...) with the same model class or factory"
        )
    build = _class_factory(factory) if inspect.isclass(factory) else factory
    comp = Component(
        spec_model["name"], args=dict(spec_model["args"]), label=spec_model["label"], factory=build
    )
    net = build_model(comp, tuple(state["in_shape"]), int(state["num_classes"]))
    net.load_state_dict(state["state_dict"])
    info = {k: v for k, v in state.items() if k != "state_dict"}
    model = TrainedModel(net, state["mean"], state["std"], info)
    return model.eval()


def _model_file(run_dir: Path, job_id: str | None) -> Path:
    """The model file of ``job_id`` in ``run_dir`` (None: :func:`_default_job`'s).

    Raises:
        RaynnError: a link in the way, or no such file (the files kept are named).
    """
    check_no_links(run_dir)
    job_id = _default_job(run_dir) if job_id is None else job_id
    path = model_path(run_dir, job_id)
    if not path.exists():
        kept = sorted(p.stem for p in (run_dir / MODELS_DIR).glob("*.pt"))
        raise RaynnError(
            f"no model file for job {job_id!r} in {run_dir / MODELS_DIR} (kept: "
            f"{', '.join(kept[:5]) or 'none'}{', ...' if len(kept) > 5 else ''}); pick a kept "
            "job, or set output.keep_models: all"
        )
    return path


def _class_factory(cls: type) -> Callable[..., nn.Module]:
    """A model class as a factory, called as the seed API calls it: ``num_classes=`` if it
    takes it, else with no arguments (but the spec's ``args``)."""

    def build(in_shape: Any, num_classes: int, **args: Any) -> nn.Module:
        try:
            takes = "num_classes" in inspect.signature(cls).parameters
        except (TypeError, ValueError):
            takes = False
        return cls(num_classes=num_classes, **args) if takes else cls(**args)

    return build


__all__ = [
    "TrainedModel",
    "best_configuration",
    "keep_models",
    "load_model",
    "model_path",
    "refit_best",
]
