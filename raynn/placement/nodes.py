"""The machines a run places work on: :class:`Node`, its core groups, and Ray node probing.

A node is a machine (or a raylet's share of one): Ray's id, a display name, the CPUs its
workers may use and their topology (:mod:`raynn.placement.topology`). K-fold cuts it into
core groups (:meth:`Node.groups`); HOGWILD places one worker per CPU.

On a Ray cluster each node's CPUs are read there by a small probe task
(:func:`start_probes`, :func:`nodes_from`; :func:`probe_nodes` waits for them); the embedded
Ray of this process is one node, this machine (:func:`local_node`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raynn.placement.cores import usable_cpus
from raynn.placement.topology import NodeCores, flat_cores, read_topology


@dataclass
class Node:
    """A machine (or a raylet's share of one) as the executors see it.

    Attributes:
        node_id: Ray's node id (``local`` off Ray).
        name: the display name (the host, with a short node id where a host has several).
        cpus: the CPUs its workers may use.
        host: the host name.
        cores: its scheduling units (default: one per CPU).
    """

    node_id: str
    name: str
    cpus: list[int]
    host: str = ""
    cores: NodeCores | None = None

    def __post_init__(self) -> None:
        if self.cores is None:
            self.cores = flat_cores(self.cpus)

    def domain(self, index: int) -> str:
        """The queue's name for NUMA node ``index`` of this node (the node's own if only one)."""
        return self.name if len(self.cores.domains) == 1 else f"{self.name}#numa{index}"

    def groups(self, size: int) -> list[Group]:
        """``(domain, unit ids, cpus)`` of each core group of ``size`` units."""
        domain_of, unit_cpus = self.cores.domain_of(), self.cores.unit_cpus()
        return [
            (self.domain(domain_of[g[0]]), g, sorted(c for u in g for c in unit_cpus[u]))
            for g in self.cores.groups(size)
        ]


Group = tuple[str, tuple[int, ...], list[int]]  # (queue domain, unit ids, cpus)
NodeGroup = tuple[Node, Group]  # where one worker goes: a node and one of its core groups


def local_node(node_id: str = "local", num_cpus: int | None = None, smt: str = "together") -> Node:
    """This machine as one node: the CPUs this process may use (the first ``num_cpus``)."""
    host = socket.gethostname()
    cpus = usable_cpus(num_cpus)
    return Node(node_id, host, cpus, host, read_topology(cpus, smt))


def on_node(node_id: str) -> dict[str, Any]:
    """Ray ``.options(...)`` that place a task or actor on node ``node_id`` and nowhere else."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}


def session_nodes(embedded: bool, num_cpus: int | None = None, smt: str = "together") -> list[Node]:
    """The nodes of the Ray this process joined: with an embedded Ray one node, this machine
    (no need to ask it for its CPUs); on a cluster every alive node, probed
    (:func:`probe_nodes`)."""
    import ray

    if embedded:
        return [local_node(ray.get_runtime_context().get_node_id(), num_cpus, smt)]
    return probe_nodes(smt=smt)


def node_groups(nodes: Sequence[Node], size: int) -> list[NodeGroup]:
    """(node, core group of ``size`` units) pairs of ``nodes``, round-robin over the nodes."""
    per_node = [[(n, g) for g in n.groups(size)] for n in nodes]
    out = []
    for i in range(max((len(p) for p in per_node), default=0)):
        out.extend(p[i] for p in per_node if i < len(p))
    return out


def probe_nodes(known: Sequence[Node] = (), smt: str = "together") -> list[Node]:
    """Alive Ray nodes with CPUs that are not in ``known``, each with the CPUs it may use.

    A small task on each node reads ``os.sched_getaffinity(0)`` and the CPU topology
    there; the node's Ray CPU count caps it. Several raylets on one host (a test cluster)
    get disjoint CPUs while they fit. Blocks (up to 120 s); a running run probes joiners
    with :func:`start_probes` and :func:`nodes_from` instead, without waiting.
    """
    return finish_probes(known, start_probes({n.node_id for n in known}, smt))


def finish_probes(
    known: Sequence[Node], probes: Sequence[tuple[dict[str, Any], Any]], timeout: float = 120
) -> list[Node]:
    """The nodes of started probes (:func:`start_probes`), waiting up to ``timeout`` s."""
    import ray

    infos = ray.get([ref for _, ref in probes], timeout=timeout)
    pairs = [(n, info) for (n, _), info in zip(probes, infos, strict=True)]
    return nodes_from(known, pairs)


def start_probes(exclude: set[str], smt: str = "together") -> list[tuple[dict[str, Any], Any]]:
    """Start the probe task on every alive node with CPUs not in ``exclude``: pairs of
    the node's entry in ``ray.nodes()`` and the task's ref (head node first)."""
    import ray

    @ray.remote(num_cpus=0, max_retries=0)
    def node_info() -> tuple[str, list[int], Any]:
        cpus = sorted(os.sched_getaffinity(0))
        return socket.gethostname(), cpus, read_topology(cpus, smt)

    alive = [
        n
        for n in ray.nodes()
        if n["Alive"] and n["Resources"].get("CPU", 0) >= 1 and n["NodeID"] not in exclude
    ]
    alive.sort(key=lambda n: (not n.get("IsHeadNode", False), n["NodeID"]))
    return [(n, node_info.options(**on_node(n["NodeID"])).remote()) for n in alive]


def nodes_from(known: Sequence[Node], probed: Sequence[tuple[dict[str, Any], Any]]) -> list[Node]:
    """Nodes from finished probes (``(ray.nodes() entry, probe result)``), their CPUs
    kept disjoint from ``known`` nodes on the same host."""
    hosts = [n.host for n in known] + [info[0] for _, info in probed]
    used: dict[str, int] = {}
    for n in known:
        used[n.host] = used.get(n.host, 0) + len(n.cores.units)
    nodes = []
    for n, (host, _, cores) in probed:
        units = cores.units
        count = min(int(n["Resources"]["CPU"]) // cores.width or 1, len(units))
        offset = used.get(host, 0)
        if offset + count > len(units):
            offset = 0
        used[host] = offset + count
        mine = [c for u in units[offset : offset + count] for c in u]
        name = host if hosts.count(host) == 1 else f"{host}:{n['NodeID'][:6]}"
        nodes.append(Node(n["NodeID"], name, mine, host, _subset(cores, mine)))
    return nodes


def alive_node_ids(with_cpu: bool = False) -> set[str]:
    """Ids of the Ray nodes alive now (``with_cpu``: only those with a CPU to run workers)."""
    import ray

    return {
        n["NodeID"]
        for n in ray.nodes()
        if n["Alive"] and (not with_cpu or n["Resources"].get("CPU", 0) >= 1)
    }


def _subset(cores: NodeCores, cpus: Sequence[int]) -> NodeCores:
    """``cores`` restricted to the units whose CPUs are all in ``cpus``."""
    keep = set(cpus)
    domains = tuple(tuple(u for u in d if set(u) <= keep) for d in cores.domains)
    return NodeCores(tuple(d for d in domains if d))
