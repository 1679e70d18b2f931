"""The peers of ``raynn bench search``: the same search space through Optuna and Ray Tune.

Each peer is a command of its own (``python -m raynn.bench.search_peers MODE --spec S --out
DIR``), so the harness (:mod:`raynn.bench.search`) times it as it times ``raynn run``: from
the command's start to its exit. Both train with raynn's own
:func:`raynn.kfold.train.train_job` on the jobs of :func:`raynn.kfold.runner.prepare` (the same
configurations, folds, seeds and numbers), one thread per fold; only the search machinery
differs. Each is set up as its documentation recommends:

* ``optuna``: one study, direction ``maximize``, a :class:`optuna.samplers.GridSampler` over
  one categorical parameter ``config`` whose values are the configuration ids (so the grid
  is exactly the configurations; ``seed=0``), and a :class:`optuna.pruners.WilcoxonPruner`
  (its defaults: ``p_threshold=0.1``, ``n_startup_steps=2``) over the folds: each fold's
  val_accuracy is reported with ``trial.report(value, step=fold)`` and ``should_prune()``
  is asked after each; the objective is the mean over the folds. Optuna's own multi-process
  recipe: one process per usable CPU, each pinned there (``os.sched_setaffinity``, one torch
  thread), sharing a ``JournalStorage`` file and running ``study.optimize`` until the grid is
  exhausted (GridSampler stops the study; ``MaxTrialsCallback(configurations,
  states=None)``, Optuna's way to cap trials across processes, keeps an idle process from
  re-evaluating a configuration another one is still running). The processes are forked
  from the launcher before anything imports torch. Chosen: ``study.best_trial`` (a completed trial).
* ``tune``: Ray Tune, one trial per configuration (``tune.grid_search`` over the ids, one
  CPU each, ``max_concurrent_trials`` = usable CPUs, ``reuse_actors=True``), its folds run
  in order inside the trial, reporting after each the running mean val_accuracy and
  ``folds_done``; ``ASHAScheduler(time_attr="folds_done", max_t=folds, grace_period=1,
  reduction_factor=2)`` stops the worse ones. Chosen: the best mean among the trials that
  trained every fold (a trial ASHA stopped has a mean over fewer folds, not comparable).

Both write ``DIR/rows.json`` (one row per fold: ``config``, ``fold``, ``val_accuracy``,
``status``: ``ok`` trained, ``failed`` diverged, ``pruned`` never trained because the pruner
or scheduler stopped its configuration first; ``start_time``, ``end_time``, ``worker``) and
``DIR/result.json`` (``chosen``, the settings).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PEERS = ("optuna", "tune")
STUDY = "raynn-search"


class FoldFailed(Exception):
    """A fold diverged (NaN loss): its configuration's trial fails."""


def config_id(job: Any) -> str:
    """The configuration a job is a fold of (``model/scheduler`` where the job has no id)."""
    return getattr(job, "config", "") or f"{job.model.label}/{job.scheduler.label}"


def group_configs(jobs: Iterable[Any]) -> dict[str, list[Any]]:
    """Configuration id -> its jobs, in fold order (ids in grid order: by job index)."""
    out: dict[str, list[Any]] = {}
    for job in sorted(jobs, key=lambda j: j.index):
        out.setdefault(config_id(job), []).append(job)
    return {c: sorted(js, key=lambda j: j.fold) for c, js in out.items()}


def _plan(spec_path: str) -> Any:
    from raynn.kfold.runner import prepare
    from raynn.spec import load_spec

    return prepare(load_spec(spec_path))


def train_fold(job: Any, data: Any, worker: str) -> dict[str, Any]:
    """Train one fold with raynn's ``train_job`` at one thread; its row."""
    from raynn.kfold.train import train_job

    start = time.time()
    try:
        result = train_job(job, data, threads=1)
        status, acc = ("ok" if result.status == "ok" else "failed"), result.val_accuracy
    except Exception:  # noqa: BLE001 - a failed fold is a row, as raynn records it
        status, acc = "failed", math.nan
    return {
        "config": config_id(job),
        "fold": int(job.fold),
        "val_accuracy": float(acc),
        "status": status,
        "start_time": start,
        "end_time": time.time(),
        "worker": worker,
    }


def _save_row(out: str, row: dict[str, Any]) -> None:
    folder = Path(out) / "rows"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{os.getpid()}-{time.monotonic_ns()}.json"
    tmp = folder / f".{name}"
    tmp.write_text(json.dumps(row))
    tmp.rename(folder / name)


def _pruned(config: str, folds: Iterable[int]) -> list[dict[str, Any]]:
    nan = math.nan
    return [
        {"config": config, "fold": int(f), "val_accuracy": nan, "status": "pruned",
         "start_time": nan, "end_time": nan, "worker": ""}
        for f in folds
    ]  # fmt: skip


def collect_rows(out: str, configs: dict[str, list[int]] | None = None) -> list[dict[str, Any]]:
    """Every fold row saved under ``out/rows``; with ``configs`` (id -> folds), the folds no
    row names are added as ``pruned``."""
    rows = [json.loads(p.read_text()) for p in sorted((Path(out) / "rows").glob("*.json"))]
    seen = {(r["config"], r["fold"]) for r in rows}
    for config, folds in (configs or {}).items():
        rows += _pruned(config, [f for f in folds if (config, f) not in seen])
    return rows


def best_complete(rows: list[dict[str, Any]], folds: int) -> str | None:
    """The configuration with the best mean val_accuracy among those with ``folds`` ok folds."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if r["status"] == "ok":
            by.setdefault(r["config"], []).append(r["val_accuracy"])
    means = {c: sum(v) / len(v) for c, v in by.items() if len(v) >= folds}
    return max(means, key=lambda c: means[c]) if means else None


def _write_result(out: str, rows: list[dict[str, Any]], result: dict[str, Any]) -> None:
    Path(out, "rows.json").write_text(json.dumps(rows))
    Path(out, "result.json").write_text(json.dumps(result, indent=1))


def _journal(path: str) -> Any:
    """Optuna's journal storage on a file: ``JournalFileBackend`` (``JournalFileStorage``
    before Optuna 4)."""
    from optuna.storages import JournalStorage

    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # optuna < 4.0
        from optuna.storages import JournalFileStorage as JournalFileBackend
    return JournalStorage(JournalFileBackend(path))


def _optuna_worker(spec_path: str, out: str, journal: str, cpu: int) -> None:
    """One of Optuna's processes: pinned to ``cpu``, one torch thread, its share of the grid."""
    os.sched_setaffinity(0, {cpu})
    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan = _plan(spec_path)
    configs = group_configs(plan.jobs)
    sampler = optuna.samplers.GridSampler({"config": list(configs)}, seed=0)
    study = optuna.load_study(
        study_name=STUDY,
        storage=_journal(journal),
        sampler=sampler,
        pruner=optuna.pruners.WilcoxonPruner(),
    )

    def objective(trial: Any) -> float:
        config = trial.suggest_categorical("config", list(configs))
        values: list[float] = []
        for i, job in enumerate(configs[config]):
            row = train_fold(job, plan.data, f"optuna-cpu{cpu}")
            _save_row(out, row)
            if row["status"] != "ok":
                raise FoldFailed(f"{config} fold {job.fold} failed")
            values.append(row["val_accuracy"])
            trial.report(row["val_accuracy"], step=job.fold)
            if trial.should_prune():
                for r in _pruned(config, [j.fold for j in configs[config][i + 1 :]]):
                    _save_row(out, r)
                raise optuna.TrialPruned()
        return sum(values) / len(values)

    # the grid's trials across every process: an idle process re-evaluates nothing
    stop = optuna.study.MaxTrialsCallback(len(configs), states=None)
    study.optimize(objective, n_trials=len(configs), catch=(FoldFailed,), callbacks=[stop])


def run_optuna(spec_path: str, out: str, cpus: list[int]) -> None:
    """The study, then one forked, pinned process per CPU sharing it through the journal."""
    import multiprocessing

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = str(Path(out) / "optuna.journal")
    study = optuna.create_study(study_name=STUDY, storage=_journal(journal), direction="maximize")
    ctx = multiprocessing.get_context("fork")  # nothing here has imported torch yet
    procs = [ctx.Process(target=_optuna_worker, args=(spec_path, out, journal, c)) for c in cpus]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise SystemExit(f"an optuna process failed: exit codes {[p.exitcode for p in procs]}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    chosen = study.best_trial.params["config"] if complete else None
    states = [t.state.name for t in study.trials]
    _write_result(
        out,
        collect_rows(out),
        {"mode": "optuna", "chosen": chosen, "cpus": cpus, "trials": len(states),
         "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
         "sampler": "GridSampler(seed=0)", "pruner": "WilcoxonPruner()"},
    )  # fmt: skip


def _tune_trial(config: dict[str, Any], data: Any, configs: dict[str, list[Any]], out: str) -> None:
    """One Tune trial: a configuration's folds in order, the running mean after each."""
    import torch
    from ray import tune

    torch.set_num_threads(1)
    values: list[float] = []
    for job in configs[config["config"]]:
        row = train_fold(job, data, f"tune-{os.getpid()}")
        _save_row(out, row)
        if row["status"] != "ok":
            raise FoldFailed(f"{row['config']} fold {job.fold} failed")
        values.append(row["val_accuracy"])
        tune.report({"val_accuracy": sum(values) / len(values), "folds_done": len(values)})


def run_tune(spec_path: str, out: str, cpus: list[int], grace_period: int = 1) -> None:
    """Ray Tune: a trial per configuration, ASHA over the folds, actors reused."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no progress tables on stdout
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from raynn.placement.session import connect

    plan = _plan(spec_path)
    configs = group_configs(plan.jobs)
    folds = max(len(js) for js in configs.values())
    connect("local", len(cpus), system_config={})  # Ray as a Tune user starts it
    scheduler = ASHAScheduler(
        time_attr="folds_done",
        metric="val_accuracy",
        mode="max",
        max_t=folds,
        grace_period=grace_period,
        reduction_factor=2,
    )
    trainable = tune.with_parameters(_tune_trial, data=plan.data, configs=configs, out=out)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"config": tune.grid_search(list(configs))},
        tune_config=tune.TuneConfig(
            scheduler=scheduler, max_concurrent_trials=len(cpus), reuse_actors=True
        ),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="raynn-tune-"), verbose=0),
    )
    tuner.fit()
    rows = collect_rows(out, {c: [j.fold for j in js] for c, js in configs.items()})
    _write_result(
        out,
        rows,
        {"mode": "tune", "chosen": best_complete(rows, folds), "cpus": cpus,
         "scheduler": f"ASHAScheduler(grace_period={grace_period}, reduction_factor=2)"},
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m raynn.bench.search_peers MODE --spec S --out DIR``: run one peer."""
    p = argparse.ArgumentParser(prog="python -m raynn.bench.search_peers", description=__doc__)
    p.add_argument("mode", choices=PEERS)
    p.add_argument("--spec", required=True, help="a K-fold spec file (search domains allowed)")
    p.add_argument("--out", required=True, help="where rows.json and result.json go")
    p.add_argument("--grace-period", type=int, default=1, help="tune: ASHA's grace period")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    cpus = sorted(os.sched_getaffinity(0))
    if args.mode == "optuna":
        run_optuna(args.spec, args.out, cpus)
    else:
        run_tune(args.spec, args.out, cpus, args.grace_period)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
