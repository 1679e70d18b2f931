"""``raynn bench search``: how soon does each tool know the best configuration of a space?

Question answered: from typing the command to getting the prompt back with a chosen
configuration, how much sooner than Optuna and Ray Tune (each set up as its documentation
recommends, stopping bad configurations early) does ``raynn run`` with fold racing finish
the same search space, and is its choice as good?

Every mode runs the same space, folds and training function (raynn's ``train_job``, one
thread a fold) as a command of its own, timed from its start to its exit (``wall_s``):

* ``full``: ``raynn run`` of the spec with ``scheduling.racing`` off: every configuration
  over every fold. The truth every choice is scored against.
* ``raynn``: ``raynn run`` with fold racing on (the spec's ``scheduling.racing``, else
  ``{metric: val_accuracy}``), the local executor.
* ``raynn_ray``: the same with ``--executor ray`` (an embedded local Ray).
* ``optuna`` and ``tune``: :mod:`raynn.bench.search_peers` (GridSampler + WilcoxonPruner
  over the folds, a pinned process per core on a JournalStorage; Tune with ASHA over the
  folds, a trial per configuration, actors reused).

Each mode's choice is scored against ``full``'s run of the same repeat (else the first):
its rank and mean there, the regret (the best mean minus its mean) and whether the regret
is within the standard error of the best mean (std over folds / sqrt(folds)). With
``--repeats R`` every mode runs once per repeat, in an order rotated each repeat.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from raynn.bench.common import bench_folder, have_matplotlib, machine, run_group
from raynn.bench.names import SEARCH_MODES
from raynn.bench.search_peers import PEERS, collect_rows, group_configs
from raynn.bench.search_summary import (
    RAYNN_MODES,
    SearchRun,
    folds_from_jobs,
    folds_from_peer,
    plot_metric_vs_lr,
    run_row,
    summarize,
    to_markdown,
    truth,
)
from raynn.errors import RaynnError
from raynn.spec import SpecLoader

MODES = tuple(SEARCH_MODES)  # "full", then RAYNN_MODES, then PEERS
DEFAULT_TIMEOUT = 1800.0


def spec_files(spec_path: str | Path, out: Path) -> dict[str, Path]:
    """The spec as ``full`` runs it (racing off) and as the raynn modes run it (racing on:
    the spec's own settings, else ``{metric: val_accuracy}``); the peers read ``full``'s."""
    raw = yaml.load(Path(spec_path).read_text(), SpecLoader)  # 1e-3 is a number
    if not isinstance(raw, dict):
        raise RaynnError(f"{spec_path}: not a mapping of spec keys")
    files = {}
    for name, racing in (("full", False), ("racing", None)):
        spec = copy.deepcopy(raw)
        sched = spec.setdefault("scheduling", {}) or {}
        spec["scheduling"] = sched
        if racing is False:
            sched["racing"] = False
        elif not sched.get("racing"):
            sched["racing"] = {"metric": "val_accuracy"}
        files[name] = out / f"spec_{name}.yaml"
        files[name].write_text(yaml.safe_dump(spec, sort_keys=False))
    return files


def command(mode: str, files: dict[str, Path], root: Path) -> list[str]:
    """The command line of ``mode`` writing under ``root``."""
    py = [sys.executable, "-m"]
    if mode in PEERS:
        peer = ["raynn.bench.search_peers", mode, "--spec", str(files["full"])]
        return py + peer + ["--out", str(root)]
    spec = files["full" if mode == "full" else "racing"]
    cmd = py + ["raynn", "run", str(spec), "--output", str(root), "--no-progress"]
    return cmd + (["--executor", "ray"] if mode == "raynn_ray" else [])


def _read_run(mode: str, root: Path, configs: dict[str, list[int]]) -> tuple[Any, ...]:
    """A finished command's fold rows, its choice (a peer's ``result.json``; raynn's
    :func:`~raynn.kfold.saved.best_configuration`), run.json's stages and wall seconds."""
    if mode in PEERS:
        result_file = root / "result.json"
        chosen = json.loads(result_file.read_text())["chosen"] if result_file.exists() else None
        return folds_from_peer(collect_rows(str(root), configs)), chosen, {}, float("nan")
    from raynn.kfold import tables  # noqa: F401 - registers the tables' schemas
    from raynn.kfold.saved import best_configuration
    from raynn.runs.results import read_table

    dirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    run_dir = dirs[-1] if dirs else root
    jobs = read_table(run_dir, "jobs")
    folds = folds_from_jobs(jobs)
    stages, wall = {}, float("nan")
    try:
        attempt = json.loads((run_dir / "run.json").read_text())["runs"][-1]
        stages, wall = attempt.get("stages", {}), float(attempt.get("wall_seconds", wall))
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        pass
    best = best_configuration(jobs, list(configs)) if len(jobs) else None  # raynn's own choice
    return folds, (best["config"] if best else None), stages, wall


def run_mode(
    mode: str,
    repeat: int,
    files: dict[str, Path],
    out: Path,
    configs: dict[str, list[int]],
    timeout: float,
    env: dict[str, str],
) -> SearchRun:
    """Run ``mode``'s command once, timed from its start to its exit; read what it wrote."""
    root = out / "modes" / f"{mode}-r{repeat}"
    root.mkdir(parents=True, exist_ok=True)
    log = out / "logs" / f"{mode}-r{repeat}.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("wb") as fh:
        invoked = time.time()
        code, timed_out = run_group(command(mode, files, root), fh, env, timeout)
        exited = time.time()
    folds, chosen, stages, wall = _read_run(mode, root, configs)
    return SearchRun(mode, repeat, invoked, exited, code, timed_out, folds, chosen, stages, wall)


def rotated(modes: Sequence[str], repeat: int) -> list[str]:
    """The order of repeat ``repeat``: ``modes`` rotated by ``repeat`` places."""
    k = repeat % len(modes)
    return [*modes[k:], *modes[:k]]


def _reference(runs: list[SearchRun], repeat: int) -> SearchRun | None:
    """``full``'s finished run of ``repeat``, else its first finished one."""
    full = [r for r in runs if r.mode == "full" and not r.timed_out and not r.folds.empty]
    same = [r for r in full if r.repeat == repeat]
    return (same or full or [None])[0]


def _warm_probe_cache(spec: Any, plan: Any, cache: Path) -> None:
    """Probe the spec's models into ``cache``, as a machine's first raynn run leaves it."""
    from raynn.kfold.probe import ProbeCache, calibrate
    from raynn.placement.cores import usable_cpus

    if spec.scheduling.probe:
        calibrate(plan.jobs, plan.data, len(usable_cpus()), ProbeCache(cache / "probe.json"))


def _write(out: Path, rows: list[dict[str, Any]], info: dict, head: str, cmd: str) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "runs.csv", index=False)
    table = summarize(frame)
    (out / "summary.md").write_text(to_markdown(table, frame, info, head, cmd))
    return table


def _figure(runs: list[SearchRun], plan: Any, out: Path) -> None:
    """``metric_vs_lr.png`` from the first full run, marking what the first raynn run raced."""
    ref = _reference(runs, 0)
    if ref is None or not have_matplotlib("metric_vs_lr.png"):
        return
    lrs = {c: float(js[0].optimizer.lr) for c, js in group_configs(plan.jobs).items()}
    raced: set[str] = set()
    for run in runs:
        if run.mode in RAYNN_MODES:
            raced = set(run.folds.loc[run.folds["status"] == "raced_out", "config"])
            break
    if not plot_metric_vs_lr(ref.folds, lrs, raced, out / "metric_vs_lr.png"):
        print("[bench search] the configurations share one lr: no metric_vs_lr.png", flush=True)


def bench_search(
    spec_path: str | Path,
    modes: Sequence[str] = MODES,
    repeats: int = 1,
    output: str | Path = "bench",
    timeout: float | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, Path]:
    """Run the spec's search in every mode, ``repeats`` times interleaved; write
    ``<output>/search-<time>/`` (``runs.csv``, ``summary.md``, ``metric_vs_lr.png``)."""
    from raynn.kfold.runner import prepare
    from raynn.spec import load_spec

    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise RaynnError(f"unknown search bench mode(s) {unknown}; valid: {', '.join(MODES)}")
    if repeats < 1:
        raise RaynnError(f"--repeats must be at least 1, got {repeats}")
    spec = load_spec(str(spec_path))
    plan = prepare(spec)
    configs = {c: [j.fold for j in js] for c, js in group_configs(plan.jobs).items()}
    out = bench_folder(output, "search")
    files, info = spec_files(spec_path, out), machine()
    cmd = f"raynn bench search --spec {spec_path} --modes {','.join(modes)} --repeats {repeats}"
    if {"full", *RAYNN_MODES} & set(modes):
        _warm_probe_cache(spec, plan, out / "cache")
    env = {**os.environ, "RAYNN_CACHE_DIR": str(out / "cache")}
    commands = {m: shlex.join(command(m, files, out / "modes" / f"{m}-rK")) for m in modes}
    meta = {"spec": str(spec_path), "modes": list(modes), "repeats": repeats, "machine": info}
    meta.update(configurations=len(configs), folds=spec.folds, commands=commands, command=cmd)
    (out / "bench.json").write_text(json.dumps(meta, indent=1))
    head = (
        f"### `raynn bench search`: `{spec.name}`, {len(configs)} configurations x "
        f"{spec.folds} folds on {info['cores']} cores, {repeats} repeat(s), medians"
    )
    timeout = timeout or DEFAULT_TIMEOUT
    runs: list[SearchRun] = []
    rows: list[dict[str, Any]] = []
    for r in range(repeats):
        for mode in rotated(modes, r):
            runs.append(run_mode(mode, r, files, out, configs, timeout, env))
            if progress:
                _say(runs[-1], r, repeats, sum(map(len, configs.values())))
        ref = _reference(runs, r)
        ref_truth = truth(ref.folds, spec.folds) if ref is not None else truth(_empty(), 1)
        total = sum(map(len, configs.values()))
        rows += [run_row(x, spec.folds, total, ref_truth) for x in runs if x.repeat == r]
        table = _write(out, rows, info, head, cmd)
    _figure(runs, plan, out)
    return table, out


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=["config", "fold", "val_accuracy", "status", "trained"])


def _say(run: SearchRun, r: int, repeats: int, total: int) -> None:
    trained = int(run.folds["trained"].sum()) if not run.folds.empty else 0
    state = "timed out" if run.timed_out else f"exit {run.returncode}"
    print(
        f"[bench search] {run.mode} (repeat {r + 1}/{repeats}): wall "
        f"{run.exited - run.invoked:.1f} s ({state}), {trained}/{total} folds trained, "
        f"chose {run.chosen}",
        flush=True,
    )


__all__ = ["MODES", "bench_search", "command", "rotated", "spec_files"]
