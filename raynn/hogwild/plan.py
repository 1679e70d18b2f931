"""Where a HOGWILD round's workers run: one :class:`PlannedWorker` per core of each node
(``hogwild.workers_per_node``), checked against the spec before anything starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raynn.errors import SpecError
from raynn.placement.nodes import Node
from raynn.spec.hogwild import HogwildSpec


@dataclass
class PlannedWorker:
    """Where one worker runs: its node (and index), slot on the node, global index, core."""

    worker_id: str
    node: Node
    node_index: int
    slot: int
    index: int
    core: int


def plan_workers(spec: HogwildSpec, nodes: list[Any]) -> list[PlannedWorker]:
    """One slot per worker on each node (``hogwild.workers_per_node``); SpecError if the
    nodes cannot take the spec."""
    wpn = spec.hogwild.workers_per_node
    largest = max((len(n.cpus) for n in nodes), default=0)
    if wpn != "auto" and wpn > largest:
        raise SpecError(
            f"spec key 'hogwild.workers_per_node': {wpn} is more than the largest node has "
            f"({largest} CPUs); use at most {largest} or 'auto'"
        )
    h = spec.hogwild
    if h.max_staleness is not None and h.max_staleness < len(nodes) - 1:
        raise SpecError(
            f"spec key 'hogwild.max_staleness': {h.max_staleness} is below nodes - 1 "
            f"({len(nodes) - 1}) for {len(nodes)} nodes, so no node could ever push; use at "
            f"least {len(nodes) - 1} or null"
        )
    slots: list[PlannedWorker] = []
    for ni, node in enumerate(nodes):
        count = len(node.cpus) if wpn == "auto" else min(wpn, len(node.cpus))
        for s in range(count):
            slots.append(PlannedWorker(f"n{ni}w{s}", node, ni, s, len(slots), node.cpus[s]))
    return slots


__all__ = ["PlannedWorker", "plan_workers"]
