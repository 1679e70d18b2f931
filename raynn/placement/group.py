"""One group of pinned workers: start, ready, watch, replace, kill, sample, drain.

Every parallel run keeps a set of workers, one per core group (a :data:`NodeGroup` slot of
:mod:`raynn.placement.nodes`) on one node or many, and does the same things with them; this
module does them once, for a process forked on this machine and for a Ray actor alike (as
submitit has one submission path and a debug executor sharing it):

* **start** workers on slots, optionally **together**: created first, then waited on until
  each is up (pinned, imports done), then let go, so that work starts within a fraction of
  a second everywhere instead of as each process finishes importing torch;
* **watch** them: a worker's end is read from its backend (a closed pipe, a finished or
  failed actor call) as :class:`Exited` (it retired), :class:`Died` or :class:`Failed`
  (its own code raised an error that is not its work's: the run stops with it); a worker's
  requests (:class:`Message`, a forked worker's calls over its pipe) go to the client;
* **replace** a dead worker as the :class:`~raynn.placement.restarts.RestartPolicy`
  decides (a typed :class:`~raynn.placement.restarts.Replace`, ``GiveUp`` or ``Raise``):
  on its own slot while its node lives, else on a spare slot of a live node;
* **kill stuck** workers, the ids named by a callback (the K-fold queue's expired leases);
* **sample** utilisation on each node (:mod:`raynn.placement.monitor`), counting the
  workers' pids as the run's own once each has answered;
* **drain**: no worker starts after it, every worker is killed, the samples come back.

The client (the K-fold local and Ray runs, the joblib pool) keeps only what is its own: what
a worker runs, what a dead worker's work becomes (``on_lost``), and what a request means
(``on_message``). The backends are in :mod:`raynn.placement.backends`.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from raynn.placement.nodes import Node, NodeGroup
from raynn.placement.restarts import Decision, GiveUp, Raise, Replace, RestartPolicy
from raynn.placement.session import remote_reason

log = logging.getLogger(__name__)

READY_TIMEOUT = 300.0  # seconds workers started together are given to come up


@dataclass(eq=False)
class Member:
    """One worker of a group as the driver sees it (a backend adds its own handles).

    Attributes:
        worker_id: ``w0``, ``w1``, ... in the order started (replacements included).
        slot: the node and core group it runs on.
        pid: its process id, once known.
        retired: set by the client once the worker was told to stop: its end is no death.
        info: what its ``ready`` call answered (Ray actors started together).
        death: why it died, once it did (what ``on_lost`` may report).
    """

    worker_id: str
    slot: NodeGroup
    pid: int | None = None
    retired: bool = False
    info: Any = None
    death: str = ""


@dataclass
class Message:
    """A request the worker sent (a forked worker's call over its pipe)."""

    member: Member
    payload: Any


@dataclass
class Exited:
    """The worker ended as told (it retired); ``value``: what its call returned."""

    member: Member
    value: Any = None


@dataclass
class Died:
    """The worker ended without being told to: killed, out of memory, its node gone."""

    member: Member
    reason: str = ""


@dataclass
class Failed:
    """The worker's own code raised ``error`` (not its work's): the run stops with it."""

    member: Member
    error: BaseException


Event = Message | Exited | Died | Failed


class NotReady(Exception):
    """A worker started together with others did not come up (``strict``): ``cause`` is
    why (it died, its start-up raised, or it did not answer in time)."""

    def __init__(self, member: Member, cause: BaseException) -> None:
        super().__init__(f"worker {member.worker_id} did not come up: {remote_reason(cause)}")
        self.member, self.cause = member, cause


class Backend(ABC):
    """How workers of one kind are started, watched and killed."""

    @abstractmethod
    def create(self, worker_id: str, slot: NodeGroup) -> Member:
        """Start a worker on ``slot`` (it may still be importing when this returns)."""

    def ready(self, members: Sequence[Member], timeout: float, strict: bool) -> None:  # noqa: B027
        """Wait until ``members`` are up; a failure or timeout raises :class:`NotReady` only
        when ``strict`` (else the dead or hung worker is found like any other). Default: up
        at once."""

    def launch(self, member: Member) -> None:  # noqa: B027 - optional hook
        """Let a created worker go (a Ray actor's long-running call). Default: nothing."""

    @abstractmethod
    def poll(self, members: Sequence[Member], timeout: float) -> list[Event]:
        """What happened to ``members``, waiting up to ``timeout`` seconds for something."""

    def pids(self, members: Sequence[Member]) -> dict[str, int | None]:
        """The pids of those of ``members`` that have answered (None: died first)."""
        return {m.worker_id: m.pid for m in members if m.pid is not None}

    def wait_pid(self, member: Member, timeout: float) -> int | None:
        """``member``'s pid, waiting up to ``timeout`` seconds (None: it died first)."""
        return member.pid

    @abstractmethod
    def kill(self, member: Member) -> None:
        """Kill the worker now; its death is then seen like any other."""

    def bury(self, member: Member) -> None:  # noqa: B027 - optional hook
        """Release what is left of a worker that ended (its pipe, its idle actor)."""

    def node_alive(self, node: Node) -> bool:
        """Whether ``node`` is up (a dead node's slots take no replacement)."""
        return True


class Samplers(Protocol):
    """Utilisation sampling per node (:mod:`raynn.placement.monitor`)."""

    def add(self, node: Node) -> None: ...

    def watch(self, node_name: str, pid: int) -> None: ...

    def stop(self) -> dict[str, list[dict[str, Any]] | None]: ...


class WorkerGroup:
    """Pinned workers on core groups; see the module docstring.

    Args:
        backend: how workers start, end and die (:mod:`raynn.placement.backends`).
        policy: decides each dead worker's replacement.
        samplers: utilisation sampling per node (None: none).
        on_lost: ``on_lost(member)``: give back a dead worker's work, return whether work
            is left for a replacement (default: there is).
        on_start: ``on_start(member)``: called for every worker started.
        on_message: ``on_message(member, payload)``: answer a worker's request.
        on_exit: ``on_exit(member, value)``: a worker retired, its call returned ``value``.
        on_failed: ``on_failed(member, error)``: a worker's own code raised ``error``
            (default: the run stops, :meth:`poll` raises it).
        stuck: ``stuck()``: ``(worker_id, message)`` of workers to kill (the message is
            logged as a warning).
    """

    def __init__(
        self,
        backend: Backend,
        policy: RestartPolicy,
        *,
        samplers: Samplers | None = None,
        on_lost: Callable[[Member], bool] | None = None,
        on_start: Callable[[Member], None] | None = None,
        on_message: Callable[[Member, Any], None] | None = None,
        on_exit: Callable[[Member, Any], None] | None = None,
        on_failed: Callable[[Member, BaseException], None] | None = None,
        stuck: Callable[[], Iterable[tuple[str, str]]] | None = None,
    ) -> None:
        self.backend, self.policy, self.samplers = backend, policy, samplers
        self.on_lost, self.on_start = on_lost, on_start
        self.on_message, self.stuck = on_message, stuck
        self.on_exit, self.on_failed = on_exit, on_failed
        self.members: dict[str, Member] = {}  # the live workers by id
        self.idle: list[NodeGroup] = []  # spare slots: unused, or their worker retired
        self.dead_nodes: set[str] = set()
        self.started = 0
        self._unwatched: dict[str, Member] = {}  # pid not yet known to the samplers
        self._lock = threading.Lock()
        self._closed = False

    @property
    def restarts(self) -> int:
        """Replacement workers started."""
        return self.policy.restarts

    # -- start ---------------------------------------------------------------------------------
    def sample(self, nodes: Iterable[Node]) -> None:
        """Start sampling utilisation on ``nodes`` (joiners too, as they come)."""
        if self.samplers is not None:
            for node in nodes:
                self.samplers.add(node)

    def start(
        self,
        slots: Iterable[NodeGroup],
        *,
        together: bool = True,
        timeout: float = READY_TIMEOUT,
        strict: bool = False,
    ) -> list[Member]:
        """One worker per slot (:meth:`create`), let go (:meth:`launch`). Returns them (none
        once drained)."""
        members = self.create(slots)
        self.launch(members, together=together, timeout=timeout, strict=strict)
        return members

    def create(self, slots: Iterable[NodeGroup]) -> list[Member]:
        """One worker per slot, created in the order given but not yet let go (none once
        drained)."""
        return [m for m in (self._create(slot) for slot in slots) if m is not None]

    def launch(
        self,
        members: Sequence[Member],
        *,
        together: bool = True,
        timeout: float = READY_TIMEOUT,
        strict: bool = False,
    ) -> None:
        """Let ``members`` go; with ``together``, only once all are up (waiting up to
        ``timeout`` s). With ``strict``, the first that does not come up raises
        :class:`NotReady` and none is let go."""
        if together and members:
            self.backend.ready(members, timeout, strict)
        for member in members:
            self.backend.launch(member)

    def _create(self, slot: NodeGroup) -> Member | None:
        with self._lock:  # drain() may run in another thread: no worker outlives it
            if self._closed:
                return None
            member = self.backend.create(f"w{self.started}", slot)
            self.started += 1
            self.members[member.worker_id] = member
            self._unwatched[member.worker_id] = member
        if self.on_start is not None:
            self.on_start(member)
        return member

    # -- watch ---------------------------------------------------------------------------------
    def poll(self, timeout: float) -> None:
        """Handle what happened to the workers, waiting up to ``timeout`` s for something:
        answer requests, retire, replace the dead, raise a worker's own error."""
        self.watch()
        live = list(self.members.values())
        if not live:
            return
        for event in self.backend.poll(live, timeout):
            member = event.member
            if isinstance(event, Message):
                if self.on_message is not None:
                    self.on_message(member, event.payload)
            elif isinstance(event, Died):
                self.lost(member.worker_id, event.reason)
            elif isinstance(event, Failed):  # its own error: the run stops, unless told
                self._forget(member)
                if self.on_failed is None:
                    raise event.error from None
                self.on_failed(member, event.error)
            else:  # it retired: its slot is free
                self._forget(member)
                self.idle.append(member.slot)
                if self.on_exit is not None:
                    self.on_exit(member, event.value)

    def watch(self) -> None:
        """Count the pids of the workers that have answered as the run's own (never waits)."""
        if not self._unwatched:
            return
        for worker_id, pid in self.backend.pids(list(self._unwatched.values())).items():
            member = self._unwatched.pop(worker_id, None)
            if member is None or pid is None:
                continue  # died before it answered: nothing to watch
            member.pid = pid
            if self.samplers is not None:
                self.samplers.watch(member.slot[0].name, pid)

    def pid(self, worker_id: str, timeout: float = 30.0) -> int | None:
        """A worker's pid, waiting up to ``timeout`` s for it (None: gone, or died first)."""
        member = self.members.get(worker_id)
        if member is None:
            return None
        return member.pid if member.pid is not None else self.backend.wait_pid(member, timeout)

    def _forget(self, member: Member) -> None:
        self.members.pop(member.worker_id, None)
        self._unwatched.pop(member.worker_id, None)
        self.backend.bury(member)

    # -- deaths --------------------------------------------------------------------------------
    def lost(self, worker_id: str, reason: str = "", work_left: bool | None = None) -> Decision:
        """``worker_id`` died (seen here or by the client): its work goes back (``on_lost``,
        unless ``work_left`` is given), and the policy decides its replacement, started at
        once. Raises the policy's :class:`~raynn.placement.restarts.Raise`."""
        member = self.members.get(worker_id)
        if member is None:
            return GiveUp(f"{worker_id} is no member of the group")
        self._forget(member)
        member.death = reason or "no reason given"
        log.debug("worker %s died: %s", worker_id, member.death)
        if work_left is None:
            work_left = self.on_lost(member) if self.on_lost is not None else True
        node = member.slot[0]
        if node.node_id not in self.dead_nodes and not self.backend.node_alive(node):
            self.dead_nodes.add(node.node_id)
        target = member.slot if node.node_id not in self.dead_nodes else self._spare()
        decision = self.policy.on_lost_worker(
            target, work_left=work_left, running=bool(self.members)
        )
        if isinstance(decision, Raise):
            raise decision.error from None
        if isinstance(decision, Replace):
            if decision.slot is not member.slot:
                self.idle.remove(decision.slot)
            self.start([decision.slot], together=False)
        return decision

    def _spare(self) -> NodeGroup | None:
        """A spare slot on a live node, if any."""
        return next((s for s in self.idle if s[0].node_id not in self.dead_nodes), None)

    def kill(self, worker_id: str) -> None:
        """Kill one worker (a stuck one, or in fault-injection tests)."""
        member = self.members.get(worker_id)
        if member is not None:
            self.backend.kill(member)

    def kill_stuck(self) -> list[str]:
        """Kill the workers ``stuck()`` names (each message logged); their deaths are handled
        as any other. Returns their ids."""
        killed: list[str] = []
        for worker_id, message in self.stuck() if self.stuck is not None else ():
            if worker_id in self.members and worker_id not in killed:
                log.warning("%s", message)
                self.kill(worker_id)
                killed.append(worker_id)
        return killed

    # -- stop ----------------------------------------------------------------------------------
    def drain(self) -> dict[str, list[dict[str, Any]] | None]:
        """Stop: no worker starts from now on, every worker is killed, the samplers stop.
        Returns each sampled node's utilisation rows (None: that node is gone)."""
        with self._lock:
            self._closed = True
            members = list(self.members.values())
            self.members.clear()
            self._unwatched.clear()
        for member in members:
            self.backend.kill(member)
            self.backend.bury(member)
        return self.samplers.stop() if self.samplers is not None else {}
