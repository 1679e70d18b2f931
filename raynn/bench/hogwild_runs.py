"""The runs of ``raynn bench hogwild``: what one run measured (:class:`HogwildRun`), and the
raynn modes (serial, one node, two nodes) run through :func:`raynn.hogwild.runner.run`."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from raynn.bench.names import HOGWILD_MODES
from raynn.errors import RaynnError
from raynn.spec.hogwild import HogwildSpec, hogwild_spec_from_dict

MODES = tuple(HOGWILD_MODES)
CURVE_COLUMNS = ["time", "loss", "accuracy", "final"]


@dataclass
class HogwildRun:
    """One run of one mode at one worker count: its counts, clocks and evaluation curve."""

    mode: str
    workers: int
    repeat: int
    invoked: float
    exited: float
    start: float  # first worker's first step
    end: float  # last worker's end
    samples: int
    seconds: float  # the throughput clock
    finished: bool
    curve: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CURVE_COLUMNS))
    run_dir: Path | None = None
    error: str | None = None


def say(text: str) -> None:
    """One plain line per step of the bench, live view or not."""
    print(f"[bench hogwild] {text}", flush=True)


def parse_workers(text: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]``; anything but positive integers is a :class:`RaynnError`."""
    counts = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            value = 0
        if value < 1:
            raise RaynnError(
                f"--workers: {part!r} is not a worker count; use positive integers, e.g. 1,2"
            )
        counts.append(value)
    if not counts:
        raise RaynnError("--workers is empty; give worker counts, e.g. 1,2")
    return counts


def spec_for(base: dict[str, Any], workers_per_node: int) -> HogwildSpec:
    """The spec ``base`` (a spec dict) with ``hogwild.workers_per_node`` set."""
    raw = copy.deepcopy(base)
    raw["hogwild"]["workers_per_node"] = workers_per_node
    return hogwild_spec_from_dict(raw)


def read_curve(run_dir: Path) -> pd.DataFrame:
    """A raynn run's evaluations (``eval/``), oldest first (empty if it has none)."""
    try:
        evals = pd.read_parquet(run_dir / "eval")
    except (OSError, ValueError):
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return evals.sort_values("time")[CURVE_COLUMNS].reset_index(drop=True)


def from_result(
    mode: str, workers: int, repeat: int, result: Any, invoked: float, serial: bool = False
) -> HogwildRun:
    """A :class:`HogwildRun` from a raynn run's result (its worker rows and ``eval/``)."""
    rows = result.jobs
    finished = result.status == "completed" and not rows.empty
    start = float(rows["start_time"].min()) if not rows.empty else invoked
    end = float(rows["end_time"].max()) if not rows.empty else time.time()
    # the serial baseline's own clock leaves out the evaluations it pauses for
    seconds = float(rows["seconds"].sum()) if serial else end - start
    errors = [e for e in rows.get("error", pd.Series(dtype=object)) if isinstance(e, str) and e]
    return HogwildRun(
        mode,
        workers,
        repeat,
        invoked,
        time.time(),
        start,
        end,
        int(rows["samples"].sum()) if not rows.empty else 0,
        seconds,
        finished,
        read_curve(result.run_dir),
        result.run_dir,
        errors[0] if errors else None,
    )


# -- raynn: serial, one node, two nodes -------------------------------------------------------
def run_raynn(
    spec: HogwildSpec,
    mode: str,
    workers: int,
    repeat: int,
    out: Path,
    data: Any,
    progress: bool,
) -> HogwildRun:
    """Mode ``serial`` (one torch thread) or ``raynn`` (embedded Ray) on this machine."""
    from raynn.hogwild.runner import run

    where = out / "modes" / f"{mode}_w{workers}_r{repeat}"
    invoked = time.time()
    if mode == "serial":
        result = run(
            spec, executor="serial", output=str(where), progress=progress, threads=1, dataset=data
        )
        return from_result(mode, workers, repeat, result, invoked, serial=True)
    result = run(spec, executor="ray", output=str(where), progress=progress, dataset=data)
    return from_result(mode, workers, repeat, result, invoked)


def two_node_split(workers: int) -> tuple[int, int]:
    """Workers on the head node and on the second node of ``raynn_2node``."""
    return -(-workers // 2), workers // 2


def run_two_node(
    base: dict[str, Any], workers: int, repeat: int, out: Path, data: Any, progress: bool
) -> HogwildRun:
    """Mode ``raynn_2node``: a two-node test cluster on this machine (see
    :func:`two_node_split`), started and shut down around the run."""
    import ray
    from ray.cluster_utils import Cluster

    from raynn.hogwild.runner import run
    from raynn.placement.session import LOCAL_RAY_SYSTEM_CONFIG, free_port

    head, second = two_node_split(workers)
    if ray.is_initialized():  # the cluster's driver connection must be the only one
        ray.shutdown()
    ports = {"dashboard_port": free_port(), "dashboard_agent_listen_port": free_port()}
    cluster = Cluster(  # on free ports: another Ray on the machine may hold 8265 and 52365
        initialize_head=True,
        head_node_args={"num_cpus": head, "_system_config": LOCAL_RAY_SYSTEM_CONFIG, **ports},
    )
    try:
        cluster.add_node(num_cpus=second)
        cluster.wait_for_nodes()
        where = out / "modes" / f"raynn_2node_w{workers}_r{repeat}"
        invoked = time.time()  # the test cluster's own start is not raynn's
        result = run(
            spec_for(base, head),
            executor="ray",
            address=cluster.address,
            output=str(where),
            progress=progress,
            dataset=data,
        )
        return from_result("raynn_2node", workers, repeat, result, invoked)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
