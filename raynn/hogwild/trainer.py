"""The HOGWILD step code, the worker and the node's sync role: the names, in one place.

* :mod:`raynn.hogwild.loop`: :func:`train` (the loop shared by the serial baseline and the
  parallel workers), :func:`sgd_step`, :func:`epoch_shard`, :class:`LoopStats`, the spec's
  model and loss (:func:`build`, :func:`make_loss`).
* :mod:`raynn.hogwild.node_sync`: :class:`NodeSync`, the node's link to the parameter server,
  and its :class:`SyncStats`.
* :mod:`raynn.hogwild.worker`: :class:`HogwildWorker`, one pinned worker on the node's shared
  weights, and its rows (:func:`worker_row`, :func:`utilization_rows`).
* :func:`make_optimizer` and :func:`make_schedule` are the one factory of both kinds
  (:mod:`raynn.optim`).
"""

from __future__ import annotations

from raynn.hogwild.loop import (
    LoopStats,
    build,
    build_loss_default,
    epoch_shard,
    make_loss,
    sgd_step,
    train,
)
from raynn.hogwild.node_sync import NodeSync, SyncStats
from raynn.hogwild.worker import HogwildWorker, utilization_rows, worker_row
from raynn.optim import make_optimizer, make_schedule

__all__ = [
    "HogwildWorker",
    "LoopStats",
    "NodeSync",
    "SyncStats",
    "build",
    "build_loss_default",
    "epoch_shard",
    "make_loss",
    "make_optimizer",
    "make_schedule",
    "sgd_step",
    "train",
    "utilization_rows",
    "worker_row",
]
