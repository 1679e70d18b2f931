"""Shared fixtures: tiny specs and a module-scoped local Ray."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from raynn.placement.session import free_port
from raynn.spec import spec_from_dict

REPO = Path(__file__).resolve().parents[1]

TINY: dict[str, Any] = {
    "kind": "kfold",
    "name": "tiny",
    "seed": 3,
    "folds": 2,
    "dataset": {"name": "digits", "limit": 400},
    "models": ["lenet", "mlp"],
    "schedulers": ["cosine"],
    "optimizer": {"name": "adam", "lr": 0.003},
    "training": {"epochs": 3, "batch_size": 32},
    "scheduling": {"sample_interval": 0.2},
}


@pytest.fixture(scope="session", autouse=True)
def _own_probe_cache(tmp_path_factory):
    """The suite's probe cache: its own folder, not the user's ~/.cache/raynn."""
    import os

    os.environ["RAYNN_CACHE_DIR"] = str(tmp_path_factory.mktemp("raynn-cache"))


def make_spec(tmp_path: Path, **overrides: Any) -> Any:
    """A tiny digits spec writing under ``tmp_path``; sections are merged one level deep."""
    raw = copy.deepcopy(TINY)
    raw["output"] = {"dir": str(tmp_path / "runs")}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return spec_from_dict(raw)


@pytest.fixture(scope="module")
def ray_local():
    """A 2-CPU local Ray for the module, as raynn embeds one (its workers at the default
    priority, not Ray's nice 15, which starves them beside any busy process); shut down
    afterwards."""
    import ray

    from raynn.placement.session import LOCAL_RAY_SYSTEM_CONFIG

    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _system_config=LOCAL_RAY_SYSTEM_CONFIG,
    )
    yield ray
    ray.shutdown()


def start_cluster(num_cpus: int = 1, attempts: int = 3) -> Any:
    """A ``ray.cluster_utils.Cluster`` whose head has ``num_cpus``, on ports the OS chose.

    Ray's head binds its dashboard (8265) and dashboard agent (52365) to fixed ports by
    default; another Ray on the machine (a user's, another test run's) holds them. Each
    attempt takes fresh free ports; one that loses a port to a race is shut down and retried.
    Its workers run at the default priority, as raynn's embedded Ray runs them.
    """
    import ray
    from ray.cluster_utils import Cluster

    from raynn.placement.session import LOCAL_RAY_SYSTEM_CONFIG

    if ray.is_initialized():
        ray.shutdown()
    for attempt in range(attempts):
        cluster = Cluster()
        ports = {"dashboard_port": free_port(), "dashboard_agent_listen_port": free_port()}
        try:
            cluster.add_node(num_cpus=num_cpus, _system_config=LOCAL_RAY_SYSTEM_CONFIG, **ports)
            return cluster
        except Exception:
            cluster.shutdown()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def two_nodes():
    """Two raylets of one CPU each on this machine (ray.cluster_utils.Cluster)."""
    import ray

    cluster = start_cluster(num_cpus=1)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()
