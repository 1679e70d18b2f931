"""The worker that runs joblib tasks: one process pinned to one core group, threads capped.

:class:`TaskWorker` is a plain class; the pool (:mod:`raynn.sklearn.pool`) wraps it with
``ray.remote`` as one actor per core group. On start it pins every thread of its process to
its CPUs and caps every thread pool to their count (the same
:func:`raynn.placement.cores.pin_current_process` the K-fold workers use: OMP/MKL/OpenBLAS
variables, threadpoolctl, ``torch.set_num_threads``); each task then runs inside
``threadpool_limits(n)`` with ``torch.set_num_threads(n)`` again, after re-pinning any thread
the previous task left behind, so a task that changed either cannot leak it into the next.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from raynn.placement.cores import affinity_in_force, pin_current_process, pin_threads, thread_pools
from raynn.sklearn.tasks import TaskRecord


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, chained as its ``__cause__``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class TaskWorker:
    """Runs joblib batches on ``cpus`` with ``len(cpus)`` threads.

    Args:
        worker_id: a name unique within the backend's run.
        cpus: the CPUs of its core group (None: leave affinity alone, one thread).
        node: the node name recorded in task records (default: the host name).
    """

    def __init__(self, worker_id: str, cpus: Sequence[int] | None, node: str | None = None):
        self.worker_id = worker_id
        self.node = node or socket.gethostname()
        self.cpus = sorted(cpus) if cpus else []
        self.threads = pin_current_process(self.cpus) if self.cpus else 1

    def ready(self) -> int:
        """This worker's process id, once it is pinned (the pool waits on it)."""
        return os.getpid()

    def run(
        self, task_id: int, attempt: int, func: Callable[[], Any]
    ) -> tuple[bool, Any, dict[str, Any], str]:
        """Run ``func()`` pinned and capped.

        Returns ``(ok, result or exception, record, traceback text)``: an exception of the
        task is returned, not raised, so that only a dead worker makes the actor call fail
        (:func:`with_remote_traceback` chains the traceback text to it on the driver).
        """
        import torch
        from threadpoolctl import threadpool_limits

        if self.cpus:
            pin_threads(self.cpus)
        record = TaskRecord(
            task_id, attempt, self.worker_id, "ok", self.node, os.getpid(), list(self.cpus)
        )
        with threadpool_limits(limits=self.threads):
            torch.set_num_threads(self.threads)
            record.start = time.time()
            text = ""
            try:
                ok, value = True, func()
            except BaseException as exc:  # noqa: BLE001 - the caller's error, handed back
                ok, value = False, _portable(exc)
                text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                record.status, record.error = "error", f"{type(exc).__name__}: {exc}"
            record.end = time.time()
            record.affinity = affinity_in_force()
            record.torch_threads = torch.get_num_threads()
            record.thread_pools = thread_pools()
        return ok, value, record.to_dict(), text


def _portable(exc: BaseException) -> BaseException:
    """``exc`` itself, or a stand-in carrying its text where it does not pickle."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any pickling failure: send its text instead
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def with_remote_traceback(exc: BaseException, text: str) -> BaseException:
    """``exc`` with the worker's traceback ``text`` chained as its cause (as loky does)."""
    if text:
        exc.__cause__ = RemoteTraceback(text)
    return exc


def record_from(row: dict[str, Any]) -> TaskRecord:
    """A :class:`TaskRecord` back from :meth:`TaskWorker.run`'s dict (``seconds`` dropped)."""
    return TaskRecord(**{k: v for k, v in row.items() if k != "seconds"})
