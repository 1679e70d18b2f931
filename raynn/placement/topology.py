"""A node's CPU topology from sysfs: physical cores (SMT siblings) and NUMA nodes.

Core groups follow it: a group holds whole physical cores and never
spans two NUMA nodes. The unit of scheduling is the physical core:

* ``smt: together`` (default): a unit is a physical core with every usable sibling, so a job
  on ``k`` cores runs ``k x siblings`` threads and no other job shares its cores' caches;
* ``smt: idle``: a unit is the first usable sibling of each physical core; the other
  siblings stay idle.

Where every CPU is its own core (most VMs, this project's machines), both give one CPU per
unit and the groups are plain runs of CPUs. A unit is named by its first CPU (its id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SYSFS = Path("/sys/devices/system")
SMT_MODES = ("together", "idle")


def parse_cpu_list(text: str) -> list[int]:
    """CPUs of a sysfs list such as ``0-3,8,10-11``."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def _read_list(path: Path) -> list[int] | None:
    try:
        return parse_cpu_list(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class NodeCores:
    """A node's usable CPUs as scheduling units, grouped by NUMA node.

    ``domains[d]`` lists the units of NUMA node ``d`` in CPU order; each unit is a tuple of
    CPUs (one physical core's usable siblings, or just its first one).
    """

    domains: tuple[tuple[tuple[int, ...], ...], ...]

    @property
    def units(self) -> list[tuple[int, ...]]:
        """Every unit, NUMA node by NUMA node."""
        return [u for d in self.domains for u in d]

    @property
    def cpus(self) -> list[int]:
        """Every CPU the units use, sorted."""
        return sorted(c for u in self.units for c in u)

    @property
    def width(self) -> int:
        """CPUs per unit (the largest): threads of a one-core job."""
        return max((len(u) for u in self.units), default=1)

    def unit_cpus(self) -> dict[int, tuple[int, ...]]:
        """Unit id (its first CPU) -> its CPUs."""
        return {u[0]: u for u in self.units}

    def domain_of(self) -> dict[int, int]:
        """Unit id -> the index of its NUMA node."""
        return {u[0]: d for d, units in enumerate(self.domains) for u in units}

    def groups(self, size: int) -> list[tuple[int, ...]]:
        """Disjoint groups of ``size`` units (as unit ids), none spanning two NUMA nodes.

        Units left over in a NUMA node stay unused.
        """
        if size < 1:
            raise ValueError("cores_per_job must be >= 1")
        out = []
        for units in self.domains:
            for i in range(len(units) // size):
                out.append(tuple(u[0] for u in units[i * size : (i + 1) * size]))
        return out

    def largest_group(self) -> int:
        """The most units one group can have: the largest NUMA node's."""
        return max((len(d) for d in self.domains), default=0)


def flat_cores(cpus: Sequence[int]) -> NodeCores:
    """Every CPU its own core, one NUMA node: the topology when sysfs says nothing."""
    return NodeCores((tuple((c,) for c in sorted(cpus)),))


def read_topology(
    cpus: Sequence[int], smt: str = "together", root: str | Path = SYSFS
) -> NodeCores:
    """The scheduling units of ``cpus`` (this process's usable CPUs) from sysfs at ``root``.

    Siblings come from ``cpu/cpuN/topology/core_cpus_list`` (or ``thread_siblings_list``),
    NUMA nodes from ``node/nodeK/cpulist``. Missing files mean: no SMT, one NUMA node.
    """
    if smt not in SMT_MODES:
        raise ValueError(f"smt must be one of {SMT_MODES}, got {smt!r}")
    root = Path(root)
    usable = set(cpus)
    numa: dict[int, int] = {}
    for node_dir in sorted(root.glob("node/node[0-9]*"), key=lambda p: int(p.name[4:])):
        for c in _read_list(node_dir / "cpulist") or []:
            numa.setdefault(c, int(node_dir.name[4:]))
    seen: set[int] = set()
    by_node: dict[int, list[tuple[int, ...]]] = {}
    for cpu in sorted(usable):
        if cpu in seen:
            continue
        topo = root / "cpu" / f"cpu{cpu}" / "topology"
        siblings = _read_list(topo / "core_cpus_list") or _read_list(topo / "thread_siblings_list")
        core = tuple(sorted(c for c in (siblings or [cpu]) if c in usable)) or (cpu,)
        seen.update(core)
        unit = core if smt == "together" else core[:1]
        by_node.setdefault(numa.get(core[0], 0), []).append(unit)
    return NodeCores(tuple(tuple(by_node[n]) for n in sorted(by_node)))
