"""Core groups: disjoint sets of a node's CPUs, one per worker.

Contract: a node's usable CPUs are ``os.sched_getaffinity(0)`` as seen on
that node, split into disjoint groups of ``cores_per_job``. Two workers never share a core.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from raynn.errors import RaynnError, SpecError


def usable_cpus(limit: int | None = None) -> list[int]:
    """This process's CPUs (its affinity mask), sorted, at most ``limit`` of them."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[:limit] if limit else cpus


def check_cpu_count(option: str, value: int | None) -> None:
    """Raise :class:`RaynnError` unless ``value`` (a count of CPUs or threads given by the
    command-line option ``option``; None: its default) is from 1 to this process's CPUs."""
    usable = len(usable_cpus())
    if value is not None and not 1 <= value <= usable:
        raise RaynnError(
            f"{option} {value}: must be from 1 to {usable}, the CPUs this process may use; "
            f"leave it out to use all {usable}"
        )


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


# glibc's mallopt parameters, and the values a worker uses (see keep_large_blocks)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 128 << 20


def keep_large_blocks() -> bool:
    """Serve allocations up to 64 MiB from the heap and keep freed memory for reuse (glibc).

    By default glibc maps every block above a threshold that starts at 128 KiB fresh from the
    kernel and unmaps it on free, so each evaluation batch (1024 images) page-faults its
    activations in again. A fresh worker process has not yet raised that threshold the way a
    long-lived process (which loaded the data) has; measured on LeNet/MNIST, a job's
    evaluation took 2.3 s in a fresh process against 1.4 s with this setting
    (``benchmarks/packing_ceiling.py``). Costs up to ``TRIM_THRESHOLD`` of resident memory.
    Returns False where it does not apply (not glibc).
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        return libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):
        return False


def thread_ids(pid: int | str = "self") -> list[int]:
    """The ids of every thread of process ``pid`` (``/proc/<pid>/task``)."""
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:  # the process is gone
        return []


def pin_threads(cores: Sequence[int], pid: int | str = "self") -> None:
    """Bind every thread of process ``pid`` to ``cores``.

    ``os.sched_setaffinity(0, ...)`` binds only the calling thread: pool threads that
    OpenMP, MKL or Ray started earlier keep their old mask. This sets each thread's mask,
    again until no new thread has appeared meanwhile (a thread that starts later inherits
    the mask of the thread that starts it, which is then already bound).
    """
    mask = set(cores)
    done: set[int] = set()
    for _ in range(10):
        todo = [t for t in thread_ids(pid) if t not in done]
        if not todo:
            return
        for tid in todo:
            try:
                os.sched_setaffinity(tid, mask)
            except ProcessLookupError:  # the thread ended meanwhile
                pass
            done.add(tid)


def thread_masks(pid: int | str = "self") -> dict[int, list[int]]:
    """Each thread's CPU mask: ``{tid: sorted cpus}`` (threads that end meanwhile are left out)."""
    masks = {}
    for tid in thread_ids(pid):
        try:
            masks[tid] = sorted(os.sched_getaffinity(tid))
        except (ProcessLookupError, PermissionError):
            pass
    return masks


def affinity_in_force(pid: int | str = "self") -> list[int]:
    """The union of every thread's mask: the CPUs this process can really run on."""
    return sorted({c for mask in thread_masks(pid).values() for c in mask})


def thread_pools() -> list[str]:
    """The BLAS/OpenMP pools loaded in this process, as threadpoolctl sees them.

    One ``"user_api/internal_api=threads"`` entry per pool, e.g. ``"openmp/openmp=1"``.
    """
    from threadpoolctl import threadpool_info

    return sorted(
        f"{p.get('user_api')}/{p.get('internal_api')}={p.get('num_threads')}"
        for p in threadpool_info()
    )


def pin_current_process(cores: Sequence[int]) -> int:
    """Pin every thread of this process to ``cores`` and cap every thread pool to their count.

    Sets the OMP/MKL/OpenBLAS variables (for pools not yet started), the limits of the pools
    already loaded (threadpoolctl) and ``torch.set_num_threads`` (in the calling thread, the
    one that trains), and keeps large blocks in the heap (:func:`keep_large_blocks`). Returns
    the thread count torch reports afterwards.
    """
    import torch
    from threadpoolctl import threadpool_limits

    keep_large_blocks()
    n = len(cores)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    torch.set_num_threads(n)
    threadpool_limits(limits=n)
    pin_threads(cores)
    return torch.get_num_threads()
