"""Core groups follow the topology read from sysfs (a fake sysfs root here)."""

from __future__ import annotations

import pytest

from raynn.placement.nodes import Node
from raynn.placement.topology import flat_cores, parse_cpu_list, read_topology


def _sysfs(root, siblings: dict[int, str], numa: dict[int, str]):
    """cpu/cpuN/topology/core_cpus_list and node/nodeK/cpulist under ``root``."""
    for cpu, text in siblings.items():
        topo = root / "cpu" / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "core_cpus_list").write_text(text + "\n")
    for node, text in numa.items():
        (root / "node" / f"node{node}").mkdir(parents=True)
        (root / "node" / f"node{node}" / "cpulist").write_text(text + "\n")
    return root


@pytest.fixture
def two_sockets(tmp_path):
    """8 CPUs: NUMA node 0 holds cores (0,4) and (1,5), node 1 holds (2,6) and (3,7)."""
    siblings = {c: f"{c % 4},{c % 4 + 4}" for c in range(8)}
    return _sysfs(tmp_path, siblings, {0: "0-1,4-5", 1: "2-3,6-7"})


def test_cpu_lists_parse():
    assert parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpu_list("") == []


def test_siblings_stay_together_and_groups_never_span_numa_nodes(two_sockets):
    cores = read_topology(range(8), "together", two_sockets)
    assert cores.domains == (((0, 4), (1, 5)), ((2, 6), (3, 7)))
    assert cores.width == 2
    assert cores.groups(1) == [(0,), (1,), (2,), (3,)]
    assert cores.groups(2) == [(0, 1), (2, 3)]
    assert cores.groups(3) == []  # no NUMA node has three cores
    node = Node("n", "host", cores.cpus, "host", cores)
    assert node.groups(2) == [
        ("host#numa0", (0, 1), [0, 1, 4, 5]),
        ("host#numa1", (2, 3), [2, 3, 6, 7]),
    ]


def test_idle_siblings_leave_one_cpu_per_core(two_sockets):
    cores = read_topology(range(8), "idle", two_sockets)
    assert cores.domains == (((0,), (1,)), ((2,), (3,)))
    assert cores.cpus == [0, 1, 2, 3] and cores.width == 1


def test_only_usable_cpus_count(two_sockets):
    cores = read_topology([0, 1, 4], "together", two_sockets)  # an affinity mask without 5
    assert cores.domains == (((0, 4), (1,)),)
    assert cores.largest_group() == 2


def test_no_sysfs_means_one_core_per_cpu(tmp_path):
    cores = read_topology([3, 1, 2], "together", tmp_path)
    assert cores == flat_cores([1, 2, 3])
    node = Node("n", "h", [1, 2, 3])  # the default topology
    assert node.groups(1) == [("h", (1,), [1]), ("h", (2,), [2]), ("h", (3,), [3])]


def test_this_machine_reads():
    import os

    cores = read_topology(sorted(os.sched_getaffinity(0)))
    assert sorted(c for u in cores.units for c in u) == sorted(os.sched_getaffinity(0))


@pytest.mark.skipif(len(__import__("os").sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_job_on_one_core_gets_both_its_siblings(tmp_path, monkeypatch):
    import os

    import pandas as pd

    import raynn.kfold.executors.local as local
    from raynn.kfold.runner import run
    from raynn.placement.topology import NodeCores
    from tests.conftest import make_spec

    # as if this process's first two CPUs were the two hyperthreads of one physical core
    pair = tuple(sorted(os.sched_getaffinity(0))[:2])
    monkeypatch.setattr(local, "read_topology", lambda cpus, smt: NodeCores(((pair,),)))
    spec = make_spec(tmp_path, models=["mlp"], scheduling={"cores_per_job": 1, "probe": False})
    result = run(spec, executor=local.LocalExecutor(), progress=False)
    jobs = pd.read_parquet(result.run_dir / "jobs")
    assert result.ok and (jobs["worker"] == "w0").all()  # one core: one worker
    assert (jobs["threads"] == 2).all()
    assert all(tuple(c) == pair for c in jobs["cores"])
    assert all(tuple(a) == pair for a in jobs["affinity"])  # every thread on both siblings
