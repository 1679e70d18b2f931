"""The two kinds of worker a :class:`~raynn.placement.group.WorkerGroup` runs.

* :class:`ForkBackend`: a process forked on this machine (by the zygote of
  :mod:`raynn.placement.processes`), talking to the driver over its pipe. Up as soon as it is
  forked (its pid with it); its requests are :class:`~raynn.placement.group.Message` events,
  a closed pipe is its end (a death unless the client marked it retired).
* :class:`RayActorBackend`: a Ray actor pinned to its slot's node. Up once its ``ready``
  call answers; let go by an optional long-running call (``run``), whose end is its end:
  a ``RayActorError`` is a death, a ``RayTaskError`` the worker's own error. Without
  ``run`` (the joblib pool, which sends each task itself) its client reports its deaths
  (:meth:`~raynn.placement.group.WorkerGroup.lost`).

Both take the client's ``create`` (what to fork, which actor to make): the rest is shared.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from raynn.errors import RaynnError
from raynn.placement.group import Backend, Died, Event, Exited, Failed, Member, Message, NotReady
from raynn.placement.nodes import Node, NodeGroup, alive_node_ids
from raynn.placement.processes import recv
from raynn.placement.session import remote_cause, remote_reason


@dataclass(eq=False)
class ForkedMember(Member):
    """A forked worker: its pid (known at once) and the driver's end of its pipe."""

    conn: Connection | None = None


class ForkBackend(Backend):
    """Workers forked on this machine.

    Args:
        fork: ``fork(worker_id, slot) -> (pid, conn)`` (a
            :meth:`~raynn.placement.processes.Zygote.fork` of the client's target).
    """

    def __init__(self, fork: Callable[[str, NodeGroup], tuple[int, Connection]]) -> None:
        self._fork = fork

    def create(self, worker_id: str, slot: NodeGroup) -> ForkedMember:
        pid, conn = self._fork(worker_id, slot)
        return ForkedMember(worker_id, slot, pid=pid, conn=conn)

    def poll(self, members: Sequence[Member], timeout: float) -> list[Event]:
        conns = {m.conn: m for m in members if isinstance(m, ForkedMember)}
        events: list[Event] = []
        for conn in wait(list(conns), timeout=timeout):
            member = conns[conn]
            try:
                payload = recv(conn)
            except (EOFError, OSError):
                events.append(Exited(member) if member.retired else Died(member, "pipe closed"))
                continue
            events.append(Message(member, payload))
        return events

    def kill(self, member: Member) -> None:
        try:
            os.kill(member.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone: its death is being handled

    def bury(self, member: Member) -> None:
        if isinstance(member, ForkedMember) and member.conn is not None:
            member.conn.close()


@dataclass(eq=False)
class ActorMember(Member):
    """A Ray actor worker: the handle, its ``run`` call once let go, its pid and ready
    calls."""

    actor: Any = None
    ref: Any = None
    pid_ref: Any = None
    ready_ref: Any = None

    @property
    def refs(self) -> list[Any]:
        """The calls made to it (to fetch, so that Ray does not log their errors as
        unhandled)."""
        return [r for r in (self.ref, self.pid_ref, self.ready_ref) if r is not None]


class RayActorBackend(Backend):
    """Workers as Ray actors.

    Args:
        create: ``create(worker_id, slot) -> actor handle`` (placed on the slot's node,
            :func:`raynn.placement.nodes.on_node`).
        run: ``run(member) -> ref`` of the call that lets a worker go (None: no such call;
            the client sends work itself and reports deaths).
        ready: the actor method that answers once the worker is up.
        pid: the actor method that answers its process id (may be ``ready``).
    """

    def __init__(
        self,
        create: Callable[[str, NodeGroup], Any],
        *,
        run: Callable[[ActorMember], Any] | None = None,
        ready: str = "ready",
        pid: str = "pid",
    ) -> None:
        self._create, self._run = create, run
        self._ready, self._pid = ready, pid

    def create(self, worker_id: str, slot: NodeGroup) -> ActorMember:
        actor = self._create(worker_id, slot)
        member = ActorMember(worker_id, slot, actor=actor)
        member.pid_ref = self._call(member, self._pid)
        return member

    def ready(self, members: Sequence[Member], timeout: float, strict: bool) -> None:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        actors = [m for m in members if isinstance(m, ActorMember)]
        for m in actors:
            m.ready_ref = m.pid_ref if self._ready == self._pid else self._call(m, self._ready)
        deadline = time.monotonic() + timeout
        for member in actors:  # one by one, so that a failure names its worker
            try:
                left = max(0.0, deadline - time.monotonic())
                member.info = ray.get(member.ready_ref, timeout=left)
            except (RayActorError, RayTaskError, GetTimeoutError) as exc:
                if strict:
                    raise NotReady(member, exc) from exc
                # else a worker that died or hangs is found like any other

    @staticmethod
    def _call(member: ActorMember, method: str) -> Any:
        return getattr(member.actor, method).remote()

    def launch(self, member: Member) -> None:
        if self._run is not None and isinstance(member, ActorMember):
            member.ref = self._run(member)

    def poll(self, members: Sequence[Member], timeout: float) -> list[Event]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        refs = {m.ref: m for m in members if isinstance(m, ActorMember) and m.ref is not None}
        if not refs:
            return []
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=timeout)
        events: list[Event] = []
        for ref in ready:
            member = refs[ref]
            try:
                value = ray.get(ref)
            except RayActorError as exc:
                events.append(Died(member, remote_reason(exc)))
            except RayTaskError as exc:
                cause = remote_cause(exc)
                events.append(Failed(member, cause if isinstance(cause, RaynnError) else exc))
            else:
                events.append(Exited(member, value))
        return events

    def pids(self, members: Sequence[Member]) -> dict[str, int | None]:
        import ray

        refs = {m.pid_ref: m for m in members if isinstance(m, ActorMember)}
        if not refs:
            return {}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        return {refs[ref].worker_id: self._get(ref, 0) for ref in ready}

    def wait_pid(self, member: Member, timeout: float) -> int | None:
        return self._get(member.pid_ref, timeout) if isinstance(member, ActorMember) else None

    @staticmethod
    def _get(ref: Any, timeout: float) -> int | None:
        import ray

        try:
            return ray.get(ref, timeout=timeout)
        except Exception:  # noqa: BLE001 - died before answering: no pid
            return None

    def kill(self, member: Member) -> None:
        import ray

        if isinstance(member, ActorMember) and ray.is_initialized():
            try:
                ray.kill(member.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def bury(self, member: Member) -> None:
        self.kill(member)  # an actor that ended its call is still up: it goes

    def node_alive(self, node: Node) -> bool:
        return node.node_id in alive_node_ids()
