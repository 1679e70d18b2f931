"""The names of every bench's modes and backends, each with its word of help: one table.

Read by the benches themselves (:mod:`raynn.bench.kfold_modes`, :mod:`raynn.bench.hogwild_runs`,
:mod:`raynn.bench.sklearn`, :mod:`raynn.bench.search`) and by their option parser
(:mod:`raynn.bench.command`), which must not import the benches (they import pandas and
torch): this module imports nothing. A name with an empty word is listed bare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

KFOLD_MODES: dict[str, str] = {
    "serial": "",
    "serial1": "",
    "raynn": "",
    "raynn_cold": "",
    "raynn_ray": "",
    "racing": "fold racing on",
    "pool": "",
    "tune": "",
    "tune_fresh": "",
    "multi_instance": "",
    "processes": "",
}
KFOLD_DEFAULT = ("serial", "serial1", "raynn", "pool", "tune", "multi_instance")

HOGWILD_MODES: dict[str, str] = {
    "serial": "raynn --serial, 1 thread",
    "raynn": "HOGWILD on this node",
    "torch": "PyTorch share_memory + multiprocessing",
    "torch_ray": "torch beside an idle embedded Ray: Ray's own cost",
    "raynn_2node": "HOGWILD over a two-node ray.cluster_utils.Cluster, 2+ workers",
}
HOGWILD_DEFAULT = ("serial", "raynn", "torch", "raynn_2node")

SKLEARN_BACKENDS: dict[str, str] = {"loky": "", "ray": "", "raynn": ""}

SEARCH_MODES: dict[str, str] = {
    "full": "racing off: the truth",
    "raynn": "racing on",
    "raynn_ray": "the same on Ray",
    "optuna": "GridSampler + WilcoxonPruner",
    "tune": "ASHA",
}
SEARCH_DEFAULT = tuple(SEARCH_MODES)


def listing(names: Mapping[str, str], see: str = "") -> str:
    """``comma-separated: a, b (its word), ...`` for an option's help; ``see``: a last
    ``(where to read more)``."""
    items = ", ".join(f"{name} ({word})" if word else name for name, word in names.items())
    return f"comma-separated: {items}" + (f" ({see})" if see else "")


def joined(names: Sequence[str]) -> str:
    """An option's default: the names, comma-separated."""
    return ",".join(names)
