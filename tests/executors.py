"""What tests need to see inside a running executor: its leases, its workers, their pids."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
        from ray.exceptions import RayActorError

        try:
            return ray.get(current.queue.leases.remote())
        except RayActorError:  # the run has ended (or its queue was killed): none running
            return {}
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


def wait_for(
    predicate: Callable[[], Any],
    timeout: float | None = None,
    stop: threading.Event | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), ``stop`` is set or
    ``timeout`` seconds pass (None). With neither, it waits until the test's own timeout
    (pytest-timeout) ends the test: a wait on an event, not on a guess of how long is enough.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while not (stop is not None and stop.is_set()):
        value = predicate()
        if value:
            return value
        if deadline is not None and time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    return None


@contextmanager
def beside(watch: Callable[[threading.Event], None]) -> Iterator[None]:
    """Run ``watch(ended)`` in a thread while the block runs (a run, usually); ``ended`` is set
    when the block ends, however it ends, and the thread is joined."""
    ended = threading.Event()
    thread = threading.Thread(target=watch, args=(ended,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        ended.set()
        thread.join()
