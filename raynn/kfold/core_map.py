"""The job queue's core map: which cores each node has, which worker holds which, and who
gets what (:class:`CoreMap`, a part of :class:`raynn.kfold.queue.JobQueue`).

Workers register the cores they were started pinned to (their group); the cores of a node
are the union of its workers' groups. A placement grants a job its cores (``job.cores``, or
the worker's own group size): the worker's group first, then the node's lowest free cores.
The next job to go is the first pending one (longest first) whose cores are free; when none
fits now the worker waits, and when none could ever fit its node it retires. Two jobs never
share a core. Tail widening gives a running job a fair share of its node's free cores.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from raynn.kfold.grid import Job
from raynn.kfold.messages import Retire, Wait

WAIT_SECONDS = 0.2  # how long a worker waits for cores before asking again


@dataclass
class Holder:
    """A registered worker: the group it was started on, and the cores it holds now."""

    node: str
    base: tuple[int, ...]
    cores: tuple[int, ...] = ()  # nothing between jobs


class Placed(NamedTuple):
    """A pending job placed on a worker: the job and the cores it runs on."""

    job: Job
    cores: tuple[int, ...]  # empty for a worker that registered no cores


class CoreMap:
    """Every node's registered cores and their holders; see the module docstring."""

    def __init__(self) -> None:
        self.group = 0  # cores of the workers' groups (0: none registered)
        self._holders: dict[str, Holder] = {}
        self._on_node: dict[str, dict[str, Holder]] = {}  # node -> its workers' holders
        self._node_cores: dict[str, list[int]] = {}  # node -> every core registered there

    def register(self, worker: str, node: str, cores: Iterable[int]) -> None:
        """A worker pinned to ``cores`` of ``node`` is up; those cores join the node's map."""
        cores = tuple(cores)
        self.forget(worker)  # registered again (elsewhere): only the new place counts
        self._holders[worker] = self._on_node.setdefault(node, {})[worker] = Holder(node, cores)
        self.group = max(self.group, len(cores))
        known = self._node_cores.setdefault(node, [])
        known.extend(c for c in cores if c not in known)
        known.sort()

    def holder(self, worker: str) -> Holder | None:
        """The registered ``worker`` (None for an unregistered one)."""
        return self._holders.get(worker)

    def free_cores(self, node: str) -> list[int]:
        """Cores of ``node`` that no worker holds now (O(the node's cores), not O(workers))."""
        held = {c for h in self._on_node.get(node, {}).values() for c in h.cores}
        return [c for c in self._node_cores.get(node, []) if c not in held]

    def cores_of(self, worker: str) -> tuple[int, ...] | None:
        """The cores ``worker`` holds now (None for an unregistered worker)."""
        holder = self._holders.get(worker)
        return holder.cores if holder else None

    def workers(self) -> int:
        """How many workers are registered."""
        return len(self._holders)

    def need(self, worker: str, job: Job) -> int:
        """The cores ``job`` would get on ``worker`` (0 for an unregistered worker)."""
        holder = self._holders.get(worker)
        return self._need(job, holder) if holder else 0

    def capacity(self) -> int:
        """Cores registered on every node."""
        return sum(len(c) for c in list(self._node_cores.values()))

    def give_back(self, worker: str) -> None:
        """``worker``'s job ended: the cores it held are free (it stays registered)."""
        holder = self._holders.get(worker)
        if holder is not None:
            holder.cores = ()

    def forget(self, worker: str) -> None:
        """``worker`` retired or died: its cores are free and it holds none again."""
        holder = self._holders.pop(worker, None)
        if holder is not None:
            self._on_node[holder.node].pop(worker, None)

    @staticmethod
    def _need(job: Job, holder: Holder) -> int:
        return job.cores or len(holder.base)

    @staticmethod
    def _grant_cores(holder: Holder, free: list[int], need: int) -> tuple[int, ...]:
        mine = [c for c in holder.base if c in free]
        others = [c for c in free if c not in mine]
        return tuple(sorted((mine + others)[:need]))

    def place(self, worker: str, pending: Sequence[Job]) -> Placed | Wait | Retire:
        """The first of ``pending`` (in their order) that fits the free cores of ``worker``'s
        node, with the cores it gets; :class:`Wait` when some job could fit later, else
        :class:`Retire` (``worker`` is forgotten: its cores stay free for tail widening).

        ``worker`` first gives back the cores it held. An unregistered worker (the serial
        executor) gets the first pending job, with no cores.
        """
        self.give_back(worker)
        holder = self._holders.get(worker)
        if not pending:
            self.forget(worker)
            return Retire()
        if holder is None:
            return Placed(pending[0], ())
        capacity = len(self._node_cores.get(holder.node, ()))
        free = self.free_cores(holder.node)
        if all(self._need(j, holder) > capacity for j in pending):
            self.forget(worker)
            return Retire()
        job = next((j for j in pending if self._need(j, holder) <= len(free)), None)
        if job is None:
            return Wait(WAIT_SECONDS)
        holder.cores = self._grant_cores(holder, free, self._need(job, holder))
        return Placed(job, holder.cores)

    def widen(self, worker: str, max_threads: int, busy: Collection[str]) -> tuple[int, ...]:
        """Tail widening: more of the node's free cores for the job ``worker`` runs, up to a
        fair share among the ``busy`` workers of that node and the job's ``max_threads`` (0:
        no cap). Returns the worker's new, wider cores, or ``()`` when it gets none."""
        holder = self._holders.get(worker)
        free = self.free_cores(holder.node) if holder else []
        if holder is None or not free:
            return ()
        peers = [h for w, h in self._on_node[holder.node].items() if w in busy]
        fair = (sum(len(h.cores) for h in peers) + len(free)) // max(len(peers), 1)
        target = min(fair, max_threads or fair)
        need = target - len(holder.cores)
        if need <= 0:
            return ()
        holder.cores = tuple(sorted(holder.cores + tuple(free[:need])))
        return holder.cores
