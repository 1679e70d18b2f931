"""Each node's shared-memory segment of a round, seen from the driver: stop its workers,
release it (here for the driver's node, by a small Ray task on every other node)."""

from __future__ import annotations

import logging

from raynn.hogwild.shared_params import request_stop, unlink_segment
from raynn.placement.nodes import alive_node_ids, on_node

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
