"""Executors by name: how a job list runs. Same jobs, same worker loop, different dispatch.

* ``serial`` (:mod:`raynn.kfold.executors.serial`): one in-process worker, jobs one at a time,
  every core given to torch (or ``threads``): the baseline, and a debug executor.
* ``local`` (:mod:`raynn.kfold.executors.local`): this machine, one worker process per core group,
  forked from a zygote that holds torch and the data, pinned to its disjoint cores; the
  queue and the results live in the driver. What ``raynn run`` uses without a cluster.
* ``ray`` (:mod:`raynn.kfold.executors.ray_executor`): a Ray cluster (``--address``,
  ``RAY_ADDRESS`` under ``ray job submit``, or an embedded local Ray): a JobQueue actor, a
  ResultsCollector actor on the driver's node, a utilisation sampler per node, and one
  CoreGroupWorker actor per core group on every node, each pinned to its disjoint CPUs.

Workers live across jobs; a dead worker's job is retried. Each executor registers itself in
:data:`~raynn.kfold.executors.base.EXECUTORS`; this module imports them all and looks them up by
name (:func:`get_executor`); ``auto`` is ``ray`` when a cluster address is given (or
``RAY_ADDRESS`` is set), else ``local``.
"""

from __future__ import annotations

import os
from typing import Any

from raynn.errors import RaynnError
from raynn.kfold.executors.base import EXECUTORS, Chooser, Execution, Executor
from raynn.kfold.executors.local import LocalExecutor
from raynn.kfold.executors.ray_executor import RayExecutor
from raynn.kfold.executors.serial import SerialExecutor

__all__ = [
    "EXECUTORS",
    "Chooser",
    "Execution",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "SerialExecutor",
    "auto_executor",
    "get_executor",
]


def auto_executor(address: str | None = None) -> str:
    """``ray`` when a cluster is named (``address`` or ``RAY_ADDRESS``), else ``local``."""
    return "ray" if address or os.environ.get("RAY_ADDRESS") else "local"


def get_executor(name: str, **kwargs: Any) -> Executor:
    """An executor by name (``auto``: :func:`auto_executor`); unknown names list the valid ones.

    Options left None are not passed on (``address=None`` means nothing to ``local``).
    """
    if name == "auto":
        name = auto_executor(kwargs.get("address"))
    try:
        factory = EXECUTORS[name]
    except KeyError:
        valid = ", ".join(["auto", *EXECUTORS])
        raise RaynnError(f"unknown executor {name!r}; valid: {valid}") from None
    options = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return factory(**options)
    except TypeError as exc:
        raise RaynnError(f"executor {name!r} cannot take {sorted(options)}: {exc}") from None
