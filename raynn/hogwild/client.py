"""The client of a (possibly sharded) parameter server: split payloads, merge weights.

:class:`ServerClient` talks to :class:`~raynn.hogwild.server.ParameterServer` objects or their
Ray actor handles alike; :class:`PendingPush` is a push in flight, polled without blocking.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from raynn.hogwild.protocol import PushReply, ServerState


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

    def state(self) -> ServerState:
        """The whole vector's weights, with shard 0's version and counts."""
        parts = _invoke(self.shards, "weights", [()] * len(self.shards))
        w = np.concatenate([p[0] for p in parts])
        return ServerState(w, parts[0][1], parts[0][2], parts[0][3])

    def weights(self) -> tuple[np.ndarray, int, int, int]:
        """``(weights, version, steps, samples)``: :meth:`state` as a tuple."""
        s = self.state()
        return s.weights, s.version, s.steps, s.samples

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
