"""Nodes that join a running Ray run, probed without waiting.

A run that takes in joiners asks :meth:`Joiners.poll` now and then: it starts the probe of
every alive node it does not know yet (:func:`raynn.placement.nodes.start_probes`) and
returns the nodes whose probe has answered since. It never waits: a joiner whose probe fails
is logged and probed again at the next poll, one whose probe has not answered within
:data:`PROBE_TIMEOUT_SECONDS` is given up on for now (and probed again later).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from raynn.placement.nodes import Node, nodes_from

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 120.0  # a joiner's probe is given up on (and retried) after this

Prober = Callable[[set[str]], list[tuple[dict[str, Any], Any]]]


class Joiners:
    """The probes of joining nodes in flight.

    Args:
        start_probes: starts the probes of nodes not in the given ids
            (:func:`raynn.placement.nodes.start_probes`, or an executor's own).
    """

    def __init__(self, start_probes: Prober) -> None:
        self.start_probes = start_probes
        self.probing: dict[str, tuple[dict[str, Any], Any, float]] = {}  # node id -> probe

    def poll(self, known: list[Node]) -> list[Node]:
        """Probe the nodes not in ``known`` (nor probed now); the new nodes answered since."""
        import ray

        ids = {n.node_id for n in known} | set(self.probing)
        for entry, ref in self.start_probes(ids):
            self.probing[entry["NodeID"]] = (entry, ref, time.monotonic())
        answered = []
        for node_id, (entry, ref, since) in list(self.probing.items()):
            ready, _ = ray.wait([ref], timeout=0)
            if ready:
                del self.probing[node_id]
                try:
                    answered.append((entry, ray.get(ref)))
                except Exception as exc:  # noqa: BLE001 - a dying joiner must not end the run
                    log.warning("probing joined node %s failed (%s); will retry", node_id, exc)
            elif time.monotonic() - since > PROBE_TIMEOUT_SECONDS:
                del self.probing[node_id]
                ray.cancel(ref, force=True)
                log.warning("joined node %s did not answer its probe; will retry", node_id)
        return nodes_from(known, answered)
