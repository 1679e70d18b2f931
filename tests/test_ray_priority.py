"""The Ray that raynn starts runs its workers at the default priority, not Ray's nice 15."""

from __future__ import annotations

import os

import pytest

from raynn.kfold.executors.ray_executor import RayExecutor

pytestmark = pytest.mark.ray


def test_embedded_ray_workers_run_at_default_priority():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ex = RayExecutor(num_cpus=1)
    try:
        ex.size_groups(1, 1)

        @ray.remote(num_cpus=1)
        def niceness() -> int:
            return os.getpriority(os.PRIO_PROCESS, 0)

        assert ray.get(niceness.remote()) == os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        ex.close()
    assert not ray.is_initialized()
