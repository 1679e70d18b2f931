"""What a :class:`~raynn.hogwild.worker.HogwildWorker` needs besides the data and the weights:
:class:`WorkerContext`, built by the driver for each planned worker of a round.

The dataset and the starting weights are not in it: they travel beside it as the worker's
own arguments, so Ray puts each in the object store once and every worker on a node reads
the same copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raynn.spec.hogwild import HogwildSpec


@dataclass(frozen=True)
class WorkerContext:
    """One worker's place in the run, its spec, its node's segment and the server.

    Attributes:
        worker_id: unique name in the run (``n<node>w<slot>``).
        node: the node's name.
        slot: this worker's index on the node (0 runs the node's sync role).
        slots: workers on the node.
        index: this worker's index over all nodes.
        workers: all workers of the run.
        core: the CPU to pin to (None: leave affinity and threads alone).
        spec: the run's spec.
        segment: the node's shared-memory segment name (created by the driver).
        version: the server version of the starting weights.
        shards: the server shards (actor handles or objects), in range order.
        bounds: their ``[lo, hi)`` ranges.
        start_epoch: first epoch to run (resume, or a round after a restart).
        solo: this node is the run's only one and the driver's: the server's weights would
            only ever equal the node's, so the sync role pushes just every
            ``hogwild.checkpoint_seconds`` (for the server's checkpoint) and at the end, and
            the driver evaluates the shared weights directly.
    """

    worker_id: str
    node: str
    slot: int
    slots: int
    index: int
    workers: int
    core: int | None
    spec: HogwildSpec
    segment: str
    version: int
    shards: list[Any]
    bounds: list[tuple[int, int]]
    start_epoch: int = 0
    solo: bool = False

    @property
    def role(self) -> str:
        """``sync`` for the node's first worker (its link to the server), else ``worker``."""
        return "sync" if self.slot == 0 else "worker"


__all__ = ["WorkerContext"]
