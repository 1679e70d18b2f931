"""What tests need to see inside a running executor: its leases, its workers, their pids."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from raynn.kfold.executors.base import Executor
from raynn.kfold.executors.factory import EXECUTORS
from raynn.kfold.workers import call

# every registered executor, and those that run jobs side by side (executors register
# themselves: raynn.kfold.executors.base.register_executor)
ALL = tuple(EXECUTORS)
PARALLEL = tuple(name for name in ALL if getattr(EXECUTORS[name], "parallel", True))


def make_executor(name: str, **options: Any) -> Executor:
    """A fresh registered executor; one that is not parallel (the serial baseline) at one
    thread per job, a Ray one on the running Ray."""
    factory = EXECUTORS[name]
    if not getattr(factory, "parallel", True):
        options.setdefault("threads", 1)
    return factory(**options)


def _gone() -> tuple[type[BaseException], ...]:
    """The error of a call to an actor that has ended (none off Ray)."""
    try:
        from ray.exceptions import RayActorError
    except ImportError:  # pragma: no cover - Ray is a dependency
        return ()
    return (RayActorError,)


def leases(executor: Executor) -> dict[str, tuple[str, int, int]]:
    """Running jobs of the executor's current run: ``job_id -> (worker, attempt, epoch)``."""
    current = getattr(executor, "current", None)
    if current is None:
        return {}
    try:  # the queue is a plain object (local) or an actor (Ray)
        return call(current.queue, "leases")
    except _gone():  # the run has ended (or its queue was killed): none running
        return {}


def workers(executor: Executor) -> list[tuple[str, int, list[int]]]:
    """``(worker_id, pid, cpus of its group)`` of every live worker of the current run."""
    current = getattr(executor, "current", None)
    if current is None:
        return []
    out = []
    for member in list(current.group.members.values()):
        pid = current.group.pid(member.worker_id)
        if pid is not None:  # None: it died before it answered
            out.append((member.worker_id, pid, member.slot[1][2]))
    return out


def kill_worker(executor: Executor, worker_id: str) -> None:
    """Kill one worker of the current run as an outage would (SIGKILL / ray.kill)."""
    executor.current.group.kill(worker_id)


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
