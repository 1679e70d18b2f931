"""The parameter server: global weights, a version counter, staleness, checkpoints.

:class:`ParameterServer` is a plain class (unit-testable without Ray); the runner wraps it with
``ray.remote(max_restarts=-1, max_task_retries=-1)`` so that a killed server comes back and
reloads its latest checkpoint (:meth:`ParameterServer.__init__` looks for it).

Protocol (DESIGN.md section 3). Every ``push_every`` steps a node sends
``push(node, seq, payload, base_version)``: ``payload`` is the node's update since its last
sync (``current - last_synced`` for parameters; the current values for floating-point buffers,
which are statistics, not gradients), ``base_version`` the version it last synced at. The server
applies it, counts a new version and answers with the current weights. The staleness of a push
is the version gap ``version - base_version``: how many other pushes the node missed.

* ``staleness_lr``: the parameter update is scaled by ``1 / max(1, staleness)``.
* ``max_staleness`` (stale-synchronous): a push that would leave another active node more than
  ``max_staleness`` versions behind is refused (``accepted=False``); the node pauses and
  retries. With N nodes this needs ``max_staleness >= N - 1`` (the runner checks).
* Sharding: the flat vector is split into contiguous ranges over several servers; shard 0
  decides (gate, staleness, scale) and the others apply with the scale it chose.
* ``seq`` numbers make pushes idempotent: a push retried after a restart that the checkpoint
  already holds is not applied twice.

Checkpoints are numpy-only (``RAYNNPS1`` + SHA-256 + an ``.npz`` of the weights and a JSON
header; see :func:`encode_checkpoint`), so the server process never imports torch and starts
(and restarts) quickly.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raynn.errors import CheckpointError
from raynn.results import write_bytes

_MAGIC = b"RAYNNPS1"


def encode_checkpoint(weights: np.ndarray, meta: dict[str, Any]) -> bytes:
    """Self-checking checkpoint bytes: magic, SHA-256 of the payload, an ``.npz`` payload."""
    buf = io.BytesIO()
    header = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    np.savez(buf, weights=np.asarray(weights, dtype=np.float32), meta=header)
    payload = buf.getvalue()
    return _MAGIC + hashlib.sha256(payload).digest() + payload


def decode_checkpoint(blob: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """``(weights, meta)`` from :func:`encode_checkpoint` bytes.

    Raises:
        CheckpointError: not a server checkpoint, truncated or corrupt.
    """
    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 32:
        raise CheckpointError("server checkpoint has no raynn header (truncated or foreign)")
    digest, payload = blob[len(_MAGIC) : len(_MAGIC) + 32], blob[len(_MAGIC) + 32 :]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError("server checkpoint checksum mismatch (file corrupt)")
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        return npz["weights"].copy(), json.loads(npz["meta"].tobytes().decode())


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Read and verify a server checkpoint file."""
    return decode_checkpoint(Path(path).read_bytes())


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


class ParameterServer:
    """Holds one shard (``[lo, lo + len(initial))``) of the global flat weight vector.

    Args:
        initial: the starting weights of this shard (float32), or the path of a ``.npy`` file
            holding them (so a restarted actor needs no large constructor argument); used
            unless a readable checkpoint exists.
        shard: this shard's index (0 gates and picks the scale).
        lo: offset of this shard in the flat vector.
        param_numel: how many leading entries of the whole flat vector are parameters (the
            rest are buffers, replaced rather than added); default: all of them.
        checkpoint_path: where to save and restore ``weights + version`` (None: never).
        checkpoint_seconds: minimum seconds between automatic checkpoints (0: never).
        max_staleness: the stale-synchronous bound, or None (fully asynchronous).
        staleness_lr: scale updates by ``1 / max(1, staleness)``.
    """

    def __init__(
        self,
        initial: np.ndarray | str,
        *,
        shard: int = 0,
        lo: int = 0,
        param_numel: int | None = None,
        checkpoint_path: str | None = None,
        checkpoint_seconds: float = 2.0,
        max_staleness: int | None = None,
        staleness_lr: bool = False,
    ) -> None:
        self.shard = shard
        self.lo = lo
        if isinstance(initial, (str, Path)):
            initial = np.load(initial, allow_pickle=False)
        self.w = np.array(initial, dtype=np.float32).reshape(-1)
        total = lo + self.w.size if param_numel is None else param_numel
        self.split = int(min(max(total - lo, 0), self.w.size))  # params end, buffers start
        self.path = Path(checkpoint_path) if checkpoint_path else None
        self.checkpoint_seconds = checkpoint_seconds
        self.max_staleness = max_staleness
        self.staleness_lr = staleness_lr
        self.version = 0
        self.incarnation = 0
        self.steps = 0
        self.samples = 0
        self.pushes = 0
        self.pulls = 0
        self.refused = 0
        self.bases: dict[str, int] = {}
        self.active: set[str] = set()
        self.last_seq: dict[str, int] = {}
        self.staleness: dict[str, Counter[int]] = {}
        self.checkpoints = 0
        self.restored_from: int | None = None
        self.restore_error: str | None = None
        self.started = time.time()
        self._last_checkpoint = time.monotonic()
        self._restore()

    # -- checkpoints ---------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "lo": self.lo,
            "version": self.version,
            "incarnation": self.incarnation,
            "steps": self.steps,
            "samples": self.samples,
            "pushes": self.pushes,
            "bases": dict(self.bases),
            "active": sorted(self.active),
            "last_seq": dict(self.last_seq),
            "staleness": {n: {str(k): v for k, v in c.items()} for n, c in self.staleness.items()},
            "time": time.time(),
        }

    def _restore(self) -> None:
        if self.path is None or not self.path.is_file():
            return
        try:
            weights, meta = read_checkpoint(self.path)
            weights = weights.astype(np.float32).reshape(-1)
            if weights.size != self.w.size or meta["lo"] != self.lo:
                raise CheckpointError(
                    f"checkpoint holds {weights.size} values at {meta['lo']}, this shard "
                    f"{self.w.size} at {self.lo}"
                )
        except (OSError, ValueError, KeyError, CheckpointError) as exc:
            self.restore_error = f"{type(exc).__name__}: {exc}"
            return  # start from the initial weights rather than from garbage
        self.w = weights
        self.incarnation = int(meta.get("incarnation", 0)) + 1
        count = version_count(meta["version"])
        self.version = (self.incarnation << INCARNATION_SHIFT) | count
        self.steps, self.samples = int(meta["steps"]), int(meta["samples"])
        self.pushes = int(meta["pushes"])
        # every node synced before the restore, at best at what the checkpoint holds
        self.bases = {str(k): self.version for k in meta["bases"]}
        self.active = set(meta["active"])
        self.last_seq = {str(k): int(v) for k, v in meta["last_seq"].items()}
        self.staleness = {
            str(n): Counter({int(k): int(v) for k, v in c.items()})
            for n, c in meta["staleness"].items()
        }
        self.restored_from = self.version

    def checkpoint(self) -> bool:
        """Write the weights, version and counters atomically now; False without a path."""
        if self.path is None:
            return False
        write_bytes(self.path, encode_checkpoint(self.w, self._meta()))
        self.checkpoints += 1
        self._last_checkpoint = time.monotonic()
        return True

    def _maybe_checkpoint(self) -> None:
        due = time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds
        if self.checkpoint_seconds > 0 and due:
            self.checkpoint()

    # -- membership ----------------------------------------------------------------------------
    def _base(self, version: int) -> int:
        """A node's base version in this incarnation's numbering: one from an earlier
        incarnation counts as synced at the restore (it can be no later than that)."""
        version = int(version)
        if version >> INCARNATION_SHIFT == self.incarnation:
            return version
        return self.restored_from if self.restored_from is not None else 0

    def register(self, node: str, base_version: int | None = None) -> int:
        """Add ``node`` to the active set (synced at ``base_version``); returns the version."""
        self.active.add(node)
        self.bases[node] = self.version if base_version is None else self._base(base_version)
        self.staleness.setdefault(node, Counter())
        return self.version

    def start(self, nodes: list[str]) -> int:
        """Begin (or resume) a run with exactly ``nodes`` active, all synced now.

        Each node's push numbering starts again (its sync role is new), so its earlier
        sequence numbers no longer mark pushes as replays.
        """
        self.active = set(nodes)
        for node in nodes:
            self.bases[node] = self.version
            self.last_seq.pop(node, None)
            self.staleness.setdefault(node, Counter())
        return self.version

    def leave(self, node: str) -> None:
        """``node`` has finished: nobody waits for it any more. Checkpoints when enabled."""
        self.active.discard(node)
        if self.checkpoint_seconds > 0:
            self.checkpoint()

    # -- weights -------------------------------------------------------------------------------
    def weights(self) -> tuple[np.ndarray, int, int, int]:
        """``(weights, version, steps, samples)``: a copy of the current state, for evaluation."""
        return self.w.copy(), self.version, self.steps, self.samples

    def pull(self, node: str) -> tuple[np.ndarray, int]:
        """The current weights and version for ``node``, which is now synced at that version."""
        self.pulls += 1
        self.bases[node] = self.version
        return self.w.copy(), self.version

    def _blocks(self, node: str) -> bool:
        """Whether applying a push from ``node`` would leave another node too stale."""
        if self.max_staleness is None:
            return False
        after = self.version + 1
        return any(
            after - min(self.bases.get(m, self.version), self.version) > self.max_staleness
            for m in self.active
            if m != node
        )

    def push(
        self,
        node: str,
        seq: int,
        payload: np.ndarray,
        base_version: int,
        steps: int = 0,
        samples: int = 0,
        scale: float | None = None,
        gate: bool = True,
        omit: bool = False,
    ) -> PushReply:
        """Apply a node's update; see the module docstring.

        Args:
            node: the pushing node's name.
            seq: the node's push number (1, 2, ...): a seq already applied is not re-applied.
            payload: parameter deltas, then current buffer values, for this shard's range.
            base_version: the version the node last synced at.
            steps: training steps the update covers (for the eval table).
            samples: training samples the update covers.
            scale: the update scale chosen by shard 0 (None: decide here).
            gate: apply the stale-synchronous check (shard 0 only).
            omit: the pusher holds the weights of ``base_version``: if nobody else pushed since,
                reply without weights (``own=True``), since they are its base plus its payload.

        Returns:
            ``accepted=False`` (and no weights) when the push must wait; else the new weights.
        """
        if seq <= self.last_seq.get(node, 0):
            return PushReply(True, self.w.copy(), self.version, 0, 1.0, duplicate=True)
        staleness = self.version - min(self._base(base_version), self.version)
        if gate and self._blocks(node):
            self.refused += 1
            return PushReply(False, None, self.version, staleness, 1.0)
        if scale is None:
            scale = 1.0 / max(1, staleness) if self.staleness_lr else 1.0
        own = omit and int(base_version) == self.version and scale == 1.0
        payload = np.asarray(payload, dtype=np.float32).reshape(-1)
        if payload.size != self.w.size:
            raise ValueError(f"push of {payload.size} values to a shard of {self.w.size}")
        if scale == 1.0:
            self.w[: self.split] += payload[: self.split]
        else:
            self.w[: self.split] += np.float32(scale) * payload[: self.split]
        self.w[self.split :] = payload[self.split :]
        self.version += 1
        self.bases[node] = self.version
        self.last_seq[node] = seq
        self.steps += int(steps)
        self.samples += int(samples)
        self.pushes += 1
        self.staleness.setdefault(node, Counter())[staleness] += 1
        self._maybe_checkpoint()
        weights = None if own else self.w.copy()
        return PushReply(True, weights, self.version, staleness, float(scale), own=own)

    def push_parts(
        self,
        node: str,
        seq: int,
        base_version: int,
        steps: int,
        samples: int,
        scale: float | None,
        gate: bool,
        omit: bool,
        *parts: np.ndarray,
    ) -> PushReply:
        """:meth:`push` with the payload split in parts, each small enough for Ray to pass inline
        with the call rather than through the object store (see :func:`_parts`)."""
        payload = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return self.push(node, seq, payload, base_version, steps, samples, scale, gate, omit)

    def stats(self) -> dict[str, Any]:
        """Counters for ``run.json``: version, pushes, refusals, staleness, restores."""
        return {
            "shard": self.shard,
            "lo": self.lo,
            "numel": int(self.w.size),
            "version": version_count(self.version),
            "incarnation": self.incarnation,
            "steps": self.steps,
            "samples": self.samples,
            "pushes": self.pushes,
            "pulls": self.pulls,
            "refused": self.refused,
            "checkpoints": self.checkpoints,
            "restored_from_version": (
                None if self.restored_from is None else version_count(self.restored_from)
            ),
            "restore_error": self.restore_error,
            "staleness": {n: {int(k): v for k, v in c.items()} for n, c in self.staleness.items()},
            "active": sorted(self.active),
        }


class _Done:
    """An already computed result (a call on a plain object), shaped like an ObjectRef."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _submit(targets: Sequence[Any], method: str, args: Sequence[tuple]) -> list[Any]:
    """Start ``method`` on every target: Ray ObjectRefs for actors, :class:`_Done` otherwise."""
    fns = [getattr(t, method) for t in targets]
    if fns and getattr(fns[0], "remote", None) is not None:
        return [fn.remote(*a) for fn, a in zip(fns, args, strict=True)]
    return [_Done(fn(*a)) for fn, a in zip(fns, args, strict=True)]


def _ready(refs: Sequence[Any]) -> bool:
    pending = [r for r in refs if not isinstance(r, _Done)]
    if not pending:
        return True
    import ray

    done, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
    return len(done) == len(pending)


def _get(refs: Sequence[Any]) -> list[Any]:
    if all(isinstance(r, _Done) for r in refs):
        return [r.value for r in refs]
    import ray

    return [r.value if isinstance(r, _Done) else ray.get(r) for r in refs]


_INLINE_VALUES = 24_000  # float32 values per part: under Ray's 100 KiB inline-argument limit
_INLINE_PARTS = 16  # beyond this the payload goes through the object store in one piece


def _parts(payload: np.ndarray) -> list[np.ndarray]:
    n = -(-payload.size // _INLINE_VALUES)
    return np.array_split(payload, n) if 1 < n <= _INLINE_PARTS else [payload]


def _submit_push(
    targets: Sequence[Any], args: Sequence[tuple], payloads: Sequence[np.ndarray]
) -> list[Any]:
    """Start ``push(node, seq, payload, *rest)`` on every target; to Ray actors in parts."""
    if targets and getattr(targets[0].push, "remote", None) is not None:
        return [
            t.push_parts.remote(a[0], a[1], *a[2:], *_parts(p))
            for t, a, p in zip(targets, args, payloads, strict=True)
        ]
    return [
        _Done(t.push(a[0], a[1], p, *a[2:]))
        for t, a, p in zip(targets, args, payloads, strict=True)
    ]


def _invoke(targets: Sequence[Any], method: str, args: Sequence[tuple]) -> list[Any]:
    """Call ``method`` on every target (plain objects or Ray actor handles) and wait."""
    return _get(_submit(targets, method, args))


class PendingPush:
    """A push in flight: shard 0 first (it gates and picks the scale), then the other shards.

    :meth:`poll` never blocks, so a node's sync role keeps training while its update travels.
    """

    def __init__(
        self,
        client: ServerClient,
        args: tuple,
        base: np.ndarray | None = None,
        param_count: int | None = None,
    ) -> None:
        self.client = client
        self.args = args  # (node, seq, payload, base_version, steps, samples)
        self.base, self.param_count = base, param_count
        node, seq, payload, version, steps, samples = args
        lo, hi = client.bounds[0]
        omit = base is not None and param_count is not None
        self._first = _submit_push(
            client.shards[:1],
            [(node, seq, version, steps, samples, None, True, omit)],
            [payload[lo:hi]],
        )
        self._head: PushReply | None = None
        self._rest: list[Any] | None = None
        self._reply: PushReply | None = None

    def poll(self) -> PushReply | None:
        """The merged reply once every shard has answered, else None (without waiting)."""
        if self._reply is not None:
            return self._reply
        if self._rest is None:
            if not _ready(self._first):
                return None
            head = _get(self._first)[0]
            if head.own:
                head.weights = self._own_weights()
            if not head.accepted or len(self.client.shards) == 1:
                self._reply = head
                return head
            node, seq, payload, base, _, _ = self.args
            self._head = head
            bounds = self.client.bounds[1:]
            self._rest = _submit_push(
                self.client.shards[1:],
                [(node, seq, base, 0, 0, head.scale, False, False)] * len(bounds),
                [payload[a:b] for a, b in bounds],
            )
        if not _ready(self._rest):
            return None
        head, rest = self._head, _get(self._rest)
        assert head is not None
        head.weights = np.concatenate([head.weights] + [r.weights for r in rest])
        self._reply = head
        return head

    def _own_weights(self) -> np.ndarray:
        """Shard 0's new weights when the server omitted them: base + payload, buffers replaced."""
        assert self.base is not None and self.param_count is not None
        lo, hi = self.client.bounds[0]
        payload = self.args[2]
        weights = self.base[lo:hi] + payload[lo:hi]
        cut = min(max(self.param_count - lo, 0), hi - lo)
        weights[cut:] = payload[lo + cut : hi]
        return weights

    def wait(self, poll: float = 0.0005) -> PushReply:
        """Block until :meth:`poll` has the reply."""
        while (reply := self.poll()) is None:
            time.sleep(poll)
        return reply


class ServerClient:
    """One view of a (possibly sharded) server: split payloads, merge weights.

    Args:
        shards: :class:`ParameterServer` objects or their Ray actor handles, in range order.
        bounds: their ``[lo, hi)`` ranges (see :func:`shard_bounds`).
    """

    def __init__(self, shards: Sequence[Any], bounds: Sequence[tuple[int, int]]) -> None:
        if len(shards) != len(bounds) or not shards:
            raise ValueError("one [lo, hi) range per server shard")
        self.shards = list(shards)
        self.bounds = list(bounds)

    def register(self, node: str, base_version: int | None = None) -> int:
        """Register ``node`` on every shard; returns shard 0's version."""
        return _invoke(self.shards, "register", [(node, base_version)] * len(self.shards))[0]

    def start(self, nodes: list[str]) -> int:
        """Start every shard with ``nodes`` active; returns shard 0's version."""
        return _invoke(self.shards, "start", [(list(nodes),)] * len(self.shards))[0]

    def leave(self, node: str) -> None:
        """Tell every shard that ``node`` is done."""
        _invoke(self.shards, "leave", [(node,)] * len(self.shards))

    def weights(self) -> tuple[np.ndarray, int, int, int]:
        """``(weights, version, steps, samples)`` of the whole vector (counts from shard 0)."""
        parts = _invoke(self.shards, "weights", [()] * len(self.shards))
        w = np.concatenate([p[0] for p in parts])
        return w, parts[0][1], parts[0][2], parts[0][3]

    def pull(self, node: str) -> tuple[np.ndarray, int]:
        """Whole weights and shard 0's version; ``node`` counts as synced."""
        parts = _invoke(self.shards, "pull", [(node,)] * len(self.shards))
        return np.concatenate([p[0] for p in parts]), parts[0][1]

    def push_async(
        self,
        node: str,
        seq: int,
        payload: np.ndarray,
        base_version: int,
        steps: int,
        samples: int,
        base: np.ndarray | None = None,
        param_count: int | None = None,
    ) -> PendingPush:
        """Start a push; poll the returned :class:`PendingPush` for the reply.

        With ``base`` (the weights of ``base_version``) and ``param_count``, the server may omit
        the weights from its reply when nobody else pushed meanwhile (they are then rebuilt
        here, bit for bit): a single node then sends its update and receives almost nothing.
        """
        args = (node, seq, payload, base_version, steps, samples)
        return PendingPush(self, args, base, param_count)

    def push(
        self,
        node: str,
        seq: int,
        payload: np.ndarray,
        base_version: int,
        steps: int,
        samples: int,
        base: np.ndarray | None = None,
        param_count: int | None = None,
    ) -> PushReply:
        """Push and wait for the (merged) reply; see :meth:`push_async`."""
        pending = self.push_async(
            node, seq, payload, base_version, steps, samples, base, param_count
        )
        return pending.wait()

    def stats(self) -> list[dict[str, Any]]:
        """Every shard's :meth:`ParameterServer.stats`."""
        return _invoke(self.shards, "stats", [()] * len(self.shards))


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
