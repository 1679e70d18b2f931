"""What the parameter server and its client agree on: the reply to a push, the server's state
(:class:`ServerState`), how the flat vector is sharded, what a version counts, and the
staleness summary of a histogram."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class PushReply:
    """The server's answer to a push."""

    accepted: bool
    weights: np.ndarray | None
    version: int
    staleness: int
    scale: float
    duplicate: bool = False
    own: bool = False  # weights omitted: they are exactly the pusher's base + its payload


@dataclass(frozen=True)
class ServerState:
    """The global weights at one moment: what a round starts from, what the driver evaluates."""

    weights: np.ndarray  # the whole flat vector (parameters, then buffers)
    version: int  # the server's version (incarnation and push count)
    steps: int  # training steps the pushes so far covered
    samples: int  # training samples the pushes so far covered


def shard_bounds(numel: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges splitting ``numel`` values over ``shards`` servers."""
    shards = max(1, min(shards, max(numel, 1)))
    edges = np.linspace(0, numel, shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


# A version is ``incarnation << INCARNATION_SHIFT | count``: the count of pushes applied, and
# how many times the server was restored from a checkpoint. A restored server resumes the
# count of its checkpoint, which may be below versions it handed out before it died; with a
# new incarnation none of its versions equals one of those, so a node can never take a reply
# as made against a base it does not hold.
INCARNATION_SHIFT = 40


def version_count(version: int) -> int:
    """The push count of a version (what the eval table and ``run.json`` show)."""
    return int(version) & ((1 << INCARNATION_SHIFT) - 1)


def base_version_in(version: int, incarnation: int, restored_from: int | None) -> int:
    """A node's base ``version`` in the numbering of the server's ``incarnation``: one from an
    earlier incarnation counts as synced at the restore (``restored_from``; it can be no later
    than that)."""
    version = int(version)
    if version >> INCARNATION_SHIFT == incarnation:
        return version
    return restored_from if restored_from is not None else 0


def staleness_summary(counts: dict[int, int]) -> dict[str, float]:
    """Mean, max, median and 95th percentile of a staleness histogram."""
    total = sum(counts.values())
    if not total:
        return {"mean": math.nan, "max": math.nan, "p50": math.nan, "p95": math.nan}
    values = np.repeat(np.array(sorted(counts)), [counts[k] for k in sorted(counts)])
    return {
        "mean": float(values.mean()),
        "max": float(values.max()),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
    }
