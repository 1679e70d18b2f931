"""Each node's shared-memory segment of a round, seen from the driver: create it before any
worker starts, stop its workers, release it (here for the driver's node, by a small Ray task
on every other node). :class:`RoundSegments` is one round's set."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from raynn.hogwild.plan import PlannedWorker
from raynn.hogwild.shared_params import (
    SharedParams,
    create_detached,
    request_stop,
    sweep_stale_segments,
    unlink_segment,
)
from raynn.placement.nodes import Node, alive_node_ids, on_node

log = logging.getLogger(__name__)

ROUND_STOP_SECONDS = 30.0  # how long a round that ends early waits for its workers' last pushes


def release_segments(names: dict[str, tuple[str, str]], driver_node: str) -> list[str]:
    """Unlink each node's segment (here for the driver's node, by a task elsewhere)."""
    import ray

    failed = []
    remote = ray.remote(num_cpus=0, max_retries=0)(unlink_segment)
    refs = []
    for node_id, (name, label) in names.items():
        if node_id == driver_node:
            unlink_segment(name)
            continue
        refs.append((label, name, remote.options(**on_node(node_id)).remote(name)))
    for label, name, ref in refs:
        try:
            ray.get(ref, timeout=60)
        except Exception:  # noqa: BLE001 - a dead node's memory went with it
            failed.append(f"{label}:{name}")
    return failed


def stop_workers(segments: dict[str, tuple[str, str]], driver_node: str) -> None:
    """Set the stop flag in each node's segment (here for the driver's node, by a task
    elsewhere): its workers leave at their next step and its sync role pushes the rest."""
    import ray

    remote = ray.remote(num_cpus=0, max_retries=0)(request_stop)
    refs = []
    for node_id, (name, _) in segments.items():
        if node_id == driver_node:
            request_stop(name)
        else:
            refs.append(remote.options(**on_node(node_id)).remote(name))
    try:
        ray.get(refs, timeout=ROUND_STOP_SECONDS)
    except Exception as exc:  # noqa: BLE001 - a node that went: its steps went with it
        log.warning("could not stop every node's workers: %s", exc)


def release_all(segments: dict[str, tuple[str, str]], driver_node: str) -> list[str]:
    """Release a round's segments (node id -> (name, node name)) on the nodes still up;
    returns the ones not released (``node:name``, a lost node's among them)."""
    try:
        up = alive_node_ids() | {driver_node}
        alive = {k: v for k, v in segments.items() if k in up}
        leftover = release_segments(alive, driver_node)
        leftover += [f"{label}:{name}" for k, (name, label) in segments.items() if k not in alive]
        return leftover
    except Exception as exc:  # noqa: BLE001 - Ray itself is going down (Ctrl-C)
        log.warning("could not release shared memory segments: %s", exc)
        for name, _ in segments.values():
            unlink_segment(name)
        return []


@dataclass
class RoundSegments:
    """One round's segments: one per node with workers, named by a fresh token.

    Attributes:
        names: node id -> (segment name, node name).
        counts: node id -> the node's workers (the segment's slots).
        driver_node: the driver's node id.
        local: the driver node's segment, kept open on a solo node (the driver evaluates it).
    """

    names: dict[str, tuple[str, str]]
    counts: dict[str, int]
    driver_node: str
    local: SharedParams | None = None

    @classmethod
    def plan(cls, nodes: list[Node], slots: list[PlannedWorker], driver: str) -> RoundSegments:
        """A segment name for each of ``nodes`` that ``slots`` puts workers on."""
        token = uuid.uuid4().hex[:10]
        per_index = Counter(s.node_index for s in slots)
        names = {
            node.node_id: (SharedParams.segment_name(token, i), node.name)
            for i, node in enumerate(nodes)
            if per_index[i]
        }
        counts = {node.node_id: per_index[i] for i, node in enumerate(nodes) if per_index[i]}
        return cls(names, counts, driver)

    @property
    def solo(self) -> bool:
        """One node, the driver's: pushes would only copy its weights to the server, so they
        are rare (see :class:`~raynn.hogwild.context.WorkerContext`'s ``solo``) and the driver
        reads the segment instead."""
        return list(self.names) == [self.driver_node]

    def name_on(self, node_id: str) -> str:
        """The segment name of node ``node_id``."""
        return self.names[node_id][0]

    def create(self, weights: np.ndarray, weights_ref: Any) -> None:
        """Create every node's segment holding ``weights`` before any worker starts, so that
        workers only attach (the driver's node's here, where it stays in the driver's resource
        tracker as a safety net; each other's by a task pinned there, given ``weights_ref``)."""
        import ray

        creator = ray.remote(num_cpus=0, max_retries=0)(create_detached)
        created = []
        for name in sweep_stale_segments():  # this node's; create_detached sweeps the others
            log.warning("removed a stale shared-memory segment of a killed run: %s", name)
        for node_id, (name, _) in self.names.items():
            count = self.counts[node_id]
            if node_id == self.driver_node:
                mine = SharedParams.create(name, weights, count)
                if self.solo:
                    self.local = mine
                else:
                    mine.close()
            else:
                created.append(creator.options(**on_node(node_id)).remote(name, weights_ref, count))
        ray.get(created, timeout=300)

    def stop(self) -> None:
        """Stop the workers of every node still up (:func:`stop_workers`)."""
        up = alive_node_ids() | {self.driver_node}
        stop_workers({k: v for k, v in self.names.items() if k in up}, self.driver_node)

    def release(self) -> list[str]:
        """Close the driver's view and release every segment (:func:`release_all`); returns
        the ones not released (``node:name``)."""
        if self.local is not None:
            self.local.close()  # unlinked with the others
        return release_all(self.names, self.driver_node)
