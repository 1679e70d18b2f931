"""What tests need to see inside a running executor: its leases, its workers, their pids."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from raynn.kfold.executors.base import Executor
from raynn.kfold.executors.ray_executor import RayExecutor
from raynn.kfold.executors.serial import SerialExecutor

PARALLEL = ("local", "ray")
ALL = ("serial", *PARALLEL)


def make_executor(name: str, **options: Any) -> Executor:
    """A fresh executor: serial at one thread per job, local, or Ray (the running one)."""
    if name == "serial":
        return SerialExecutor(threads=1)
    if name == "local":
        from raynn.kfold.executors.local import LocalExecutor

        return LocalExecutor(**options)
    return RayExecutor(**options)


def leases(executor: Executor) -> dict[str, tuple[str, int, int]]:
    """Running jobs of the executor's current run: ``job_id -> (worker, attempt, epoch)``."""
    current = getattr(executor, "current", None)
    if current is None:
        return {}
    if executor.name == "ray":
        import ray

        return ray.get(current.queue.leases.remote())
    return current.queue.leases()


def workers(executor: Executor) -> list[tuple[str, int, list[int]]]:
    """``(worker_id, pid, cpus of its group)`` of every live worker of the current run."""
    current = getattr(executor, "current", None)
    if current is None:
        return []
    if executor.name == "ray":
        import ray
        from ray.exceptions import RayActorError

        out = []
        for worker_id, _, (_, (_, _, cpus)) in list(current.workers.values()):
            try:
                out.append((worker_id, ray.get(current.pids[worker_id], timeout=30), cpus))
            except RayActorError:
                pass
        return out
    return [(w.worker_id, w.pid, w.slot[1][2]) for w in list(current.workers.values())]


def kill_worker(executor: Executor, worker_id: str) -> None:
    """Kill one worker of the current run as an outage would (SIGKILL / ray.kill)."""
    current = executor.current
    if executor.name == "ray":
        import ray

        for w, actor, _ in list(current.workers.values()):
            if w == worker_id:
                ray.kill(actor, no_restart=True)
        return
    current.kill(worker_id)


def wait_for(predicate: Callable[[], Any], timeout: float = 120.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return None
