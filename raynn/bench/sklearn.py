"""``raynn bench sklearn``: one skorch grid search through three joblib backends.

Question answered: for a scikit-learn user running ``GridSearchCV`` over a small skorch net
on a CPU machine, from calling ``fit`` to getting it back, how does raynn's joblib backend
compare with joblib's own (``loky``, workers thread-capped) and with Ray's
(``ray.util.joblib``), how busy does each keep the cores, and does any change a result?

The same grid (:func:`make_search`: a seeded MLP on scikit-learn's offline ``digits``,
``grid_size`` learning rates x ``grid_size`` hidden widths, ``cv`` folds) runs back to back
in this process through each backend, every task at one thread:

* ``loky``: ``parallel_backend("loky", n_jobs=cores, inner_max_num_threads=1)``;
* ``ray``: Ray's own backend (``register_ray()``, ``n_jobs=cores``) on an embedded Ray
  started by raynn's connector (Ray gives each 1-CPU pool actor ``OMP_NUM_THREADS=1``);
* ``raynn``: ``parallel_backend("raynn", cores_per_task=1)``: one pinned actor per core.

``wall_s`` runs from entering the backend's context to leaving it with everything stopped:
each backend pays its own start-up and shutdown (loky's worker processes, Ray started fresh
and stopped for each Ray-based backend, the actors and their imports), and the refit on the
best parameters (in this process, the same for all). ``cpu_pct`` is the mean busy share of
the machine's cores over that time (psutil, :class:`~raynn.placement.monitor.
UtilizationSampler`). Parity: ``best_params_`` and ``best_score_`` equal to loky's, and the
largest ``|mean_test_score - loky's|`` over the grid (0.0: bit-identical).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from raynn.bench.common import bench_folder, machine, machine_line, markdown_table
from raynn.bench.names import SKLEARN_BACKENDS
from raynn.errors import RaynnError
from raynn.placement.cores import usable_cpus
from raynn.placement.monitor import UtilizationSampler

BACKENDS = tuple(SKLEARN_BACKENDS)
COLUMNS = [
    "backend",
    "wall_s",
    "cpu_pct",
    "tasks",
    "best_params_equal",
    "best_score_equal",
    "max_abs_diff",
    "best_score",
]
LEARNING_RATES = (0.1, 0.3, 0.6, 1.0, 1.5)
HIDDEN = (16, 32, 64, 128, 256)


class SeededMLP(nn.Module):
    """A one-hidden-layer MLP that seeds torch when skorch builds it, so every fit of the same
    parameters starts from the same weights and shuffles the same way, in any process."""

    def __init__(self, hidden: int = 32, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def digits(limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's offline ``digits`` as float32 pixels in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = (X / 16.0).astype(np.float32), y.astype(np.int64)
    return (X[:limit], y[:limit]) if limit else (X, y)


def make_search(grid_size: int = 3, cv: int = 5, epochs: int = 3, batch_size: int = 64) -> Any:
    """``GridSearchCV`` over a seeded skorch MLP: ``grid_size`` lrs x ``grid_size`` widths."""
    from sklearn.model_selection import GridSearchCV
    from skorch import NeuralNetClassifier

    if not 1 <= grid_size <= len(LEARNING_RATES):
        raise RaynnError(f"grid_size must be 1 to {len(LEARNING_RATES)}, got {grid_size}")
    net = NeuralNetClassifier(
        SeededMLP,
        criterion=nn.CrossEntropyLoss,
        max_epochs=epochs,
        batch_size=batch_size,
        train_split=None,
        iterator_train__shuffle=True,
        verbose=0,
    )
    grid = {"lr": list(LEARNING_RATES[:grid_size]), "module__hidden": list(HIDDEN[:grid_size])}
    return GridSearchCV(net, grid, cv=cv, n_jobs=-1)


def fit_with(backend: str, search: Any, X: np.ndarray, y: np.ndarray, cores: int) -> Any:
    """Fit ``search`` through ``backend`` at one thread a task; returns the raynn summary
    (None for the other backends). Start-up and shutdown happen inside: see the module."""
    import joblib

    if backend == "loky":
        from joblib.externals.loky import get_reusable_executor

        with joblib.parallel_backend("loky", n_jobs=cores, inner_max_num_threads=1):
            search.fit(X, y)
        get_reusable_executor().shutdown(wait=True)  # its workers would outlive the fit
        return None
    if backend == "ray":
        from ray.util.joblib import register_ray

        from raynn.placement import session

        started = session.connect(num_cpus=cores)
        try:
            register_ray()
            with joblib.parallel_backend("ray", n_jobs=cores):
                search.fit(X, y)
        finally:
            session.shutdown_if_started(started)
        return None
    if backend == "raynn":
        import raynn.joblib

        with joblib.parallel_backend("raynn", cores_per_task=1, num_cpus=cores):
            search.fit(X, y)
        return raynn.joblib.last_run()
    raise RaynnError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")


def _stop_idle_loky() -> None:
    """Stop a loky executor an earlier call left running, so loky pays its own start."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def run_backend(
    backend: str, X: np.ndarray, y: np.ndarray, cores: int, interval: float, **grid: Any
) -> dict[str, Any]:
    """One backend's fit, timed and sampled: a row of the table (before parity)."""
    search = make_search(**grid)
    _stop_idle_loky()
    sampler = UtilizationSampler("local", interval)
    sampler.start()
    begin = time.perf_counter()
    summary = fit_with(backend, search, X, y, cores)
    wall = time.perf_counter() - begin
    rows = sampler.stop()
    busy = [r["percent"] for r in rows if r["core"] < cores]
    results = search.cv_results_
    return {
        "backend": backend,
        "wall_s": wall,
        "cpu_pct": float(np.mean(busy)) if busy else float("nan"),
        "tasks": len(results["params"]) * search.cv,
        "best_params": search.best_params_,
        "best_score": float(search.best_score_),
        "mean_test_score": [float(v) for v in results["mean_test_score"]],
        "raynn": summary.to_dict() if summary is not None else None,
    }


def with_parity(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The table: each row's parity with the ``loky`` row (the reference)."""
    ref = next((r for r in rows if r["backend"] == "loky"), None)
    out = []
    for r in rows:
        row = {k: r[k] for k in ("backend", "wall_s", "cpu_pct", "tasks", "best_score")}
        if ref is None:
            row.update(best_params_equal="-", best_score_equal="-", max_abs_diff=float("nan"))
        else:
            diff = np.abs(np.array(r["mean_test_score"]) - np.array(ref["mean_test_score"]))
            row["best_params_equal"] = "yes" if r["best_params"] == ref["best_params"] else "no"
            row["best_score_equal"] = "yes" if r["best_score"] == ref["best_score"] else "no"
            row["max_abs_diff"] = float(diff.max())
        out.append(row)
    return pd.DataFrame(out, columns=COLUMNS)


def to_markdown(table: pd.DataFrame, info: dict[str, Any], setup: dict[str, Any]) -> str:
    """The summary: setup, the table, and how wall time and start-up are counted."""
    lines = [
        f"# raynn bench sklearn: {setup['grid']} grid, cv={setup['cv']}",
        "",
        machine_line(info),
        "",
        f"GridSearchCV over a seeded skorch MLP on digits ({setup['samples']} samples, "
        f"{setup['epochs']} epochs a fit), {setup['cores']} cores, one thread a task.",
        "",
        *markdown_table(
            table, COLUMNS, {"wall_s": "{:.1f}", "cpu_pct": "{:.0f}", "max_abs_diff": "{:.2g}"}
        ),
        "",
        "wall_s: from entering the backend's context to leaving it with everything stopped; each "
        "backend pays its own start-up (loky's processes; Ray started fresh, and stopped, for "
        "each Ray-based backend; the workers' imports) and the refit in this process. "
        "cpu_pct: mean busy % of the cores over wall_s. Parity is against loky's cv_results_.",
    ]
    return "\n".join(lines) + "\n"


def bench_sklearn(
    backends: Sequence[str] = BACKENDS,
    output: str | Path = "bench",
    grid_size: int = 3,
    cv: int = 5,
    epochs: int = 3,
    limit: int | None = None,
    num_cpus: int | None = None,
    interval: float = 0.25,
    progress: bool = True,
) -> tuple[pd.DataFrame, Path]:
    """Run the grid through each backend; write ``summary.md`` and ``bench.json``.

    Args:
        backends: some of ``loky``, ``ray``, ``raynn`` (loky is the parity reference).
        output: the folder under which ``sklearn-<time>/`` is created.
        grid_size: learning rates x hidden widths, each this many values (1-5).
        cv: folds.
        epochs: skorch's ``max_epochs`` per fit.
        limit: the first ``limit`` digits (default: all 1797).
        num_cpus: cores to use (default: this process's affinity).
        interval: seconds between utilisation samples.
        progress: print a line per backend.

    Returns:
        The table (:data:`COLUMNS`) and the output folder.
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise RaynnError(f"unknown backend(s) {unknown}; valid: {', '.join(BACKENDS)}")
    cores = len(usable_cpus(num_cpus))
    X, y = digits(limit)
    grid = {"grid_size": grid_size, "cv": cv, "epochs": epochs}
    make_search(**grid)  # a bad grid fails before any backend starts
    out = bench_folder(output, "sklearn")
    info = machine()
    setup = {**grid, "grid": f"{grid_size}x{grid_size}", "samples": len(X), "cores": cores}
    rows = []
    for backend in sorted(backends, key=lambda b: b != "loky"):  # the reference first
        rows.append(run_backend(backend, X, y, cores, interval, **grid))
        table = with_parity(rows)
        (out / "summary.md").write_text(to_markdown(table, info, setup))
        payload = {"machine": info, "setup": setup, "runs": rows, "table": table.to_dict("records")}
        (out / "bench.json").write_text(json.dumps(payload, indent=1, default=str))
        if progress:
            last = table.iloc[-1]
            print(
                f"[bench sklearn] {backend}: wall {last['wall_s']:.1f} s, "
                f"cpu {last['cpu_pct']:.0f}%, best params equal: {last['best_params_equal']}",
                flush=True,
            )
    return table, out
