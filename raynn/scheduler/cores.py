"""Core groups: disjoint sets of a node's CPUs, one per worker.

Contract (DESIGN.md section 3): a node's usable CPUs are ``os.sched_getaffinity(0)`` as seen on
that node, split into disjoint groups of ``cores_per_job``. Two workers never share a core.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from raynn.errors import SpecError


def usable_cpus(limit: int | None = None) -> list[int]:
    """This process's CPUs (its affinity mask), sorted, at most ``limit`` of them."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[:limit] if limit else cpus


def resolve_cores_per_job(setting: int | str, n_jobs: int, total_cores: int) -> int:
    """``auto`` gives 1 when there are at least as many jobs as cores, else cores // jobs."""
    if setting != "auto":
        return int(setting)
    if n_jobs >= total_cores:
        return 1
    return max(1, total_cores // max(n_jobs, 1))


def check_cores_per_job(cores_per_job: int, node_cores: Sequence[int]) -> None:
    """Fail unless at least one node has ``cores_per_job`` CPUs."""
    largest = max(node_cores, default=0)
    if cores_per_job > largest:
        raise SpecError(
            f"spec key 'scheduling.cores_per_job': {cores_per_job} is more than the largest "
            f"node has ({largest} CPUs); use at most {largest} or 'auto'"
        )


def core_groups(cpus: Sequence[int], cores_per_job: int) -> list[tuple[int, ...]]:
    """Split ``cpus`` into disjoint groups of ``cores_per_job``; leftovers stay unused."""
    if cores_per_job < 1:
        raise ValueError("cores_per_job must be >= 1")
    n = len(cpus) // cores_per_job
    return [tuple(cpus[i * cores_per_job : (i + 1) * cores_per_job]) for i in range(n)]


def pin_current_process(cores: Sequence[int]) -> int:
    """Pin this process to ``cores`` and cap every thread pool to their count.

    Sets the OMP/MKL/OpenBLAS variables (for pools not yet started) and
    ``torch.set_num_threads``. Returns the thread count torch reports afterwards.
    """
    import torch

    n = len(cores)
    os.sched_setaffinity(0, set(cores))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    torch.set_num_threads(n)
    return torch.get_num_threads()
