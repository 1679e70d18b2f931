"""The parameter server: global weights, a version counter, staleness, checkpoints.

:class:`ParameterServer` is a plain class (unit-testable without Ray); the runner wraps it with
``ray.remote(max_restarts=-1, max_task_retries=-1)`` so that a killed server comes back and
reloads its latest checkpoint (:meth:`ParameterServer.__init__` looks for it).

Protocol (docs/HOGWILD.md). Every ``push_every`` steps a node sends
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
header; :class:`~raynn.hogwild.checkpoint.Checkpointer` keeps the file), so the server process
never imports torch and starts (and restarts) quickly. Its client is
:mod:`raynn.hogwild.client`; what both agree on (the push reply, shard bounds, versions) is
:mod:`raynn.hogwild.protocol`. This module re-exports those names.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from raynn.hogwild.checkpoint import Checkpointer
from raynn.hogwild.protocol import INCARNATION_SHIFT, PushReply, base_version_in, version_count


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
        self.ckpt = Checkpointer(checkpoint_path, checkpoint_seconds)
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
        self.restored_from: int | None = None
        self._restore()
        self.restore_error = self.ckpt.load_error  # why a checkpoint found was set aside

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
        saved = self.ckpt.load(self.w.size, self.lo)
        if saved is None:  # none, or set aside: the initial weights
            return
        self.w, meta = saved
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
        return self.ckpt.save(self.w, self._meta())

    # -- membership ----------------------------------------------------------------------------
    def _base(self, version: int) -> int:
        """A node's base version in this incarnation's numbering (:func:`base_version_in`)."""
        return base_version_in(version, self.incarnation, self.restored_from)

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
        if self.ckpt.seconds > 0:
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
        if self.ckpt.due():
            self.checkpoint()
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
            "checkpoints": self.ckpt.count,
            "restored_from_version": (
                None if self.restored_from is None else version_count(self.restored_from)
            ),
            "restore_error": self.restore_error,
            "staleness": {n: {int(k): v for k, v in c.items()} for n, c in self.staleness.items()},
            "active": sorted(self.active),
        }
