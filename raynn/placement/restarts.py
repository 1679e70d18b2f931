"""How a run answers a lost worker, in one object (like Ray Train's ``FailurePolicy``).

A worker dies (its process killed, its node gone, its lease expired): its work goes back to
the queue unless it has used up its attempts, and a replacement worker starts while work is
pending, as long as the run's budget of replacements lasts. Every run asks the same
:class:`RestartPolicy`, and gets a typed decision back (as Ray Train v2's
``FailurePolicy.make_decision`` returns a ``FailureDecision``), never a bool to interpret:

* the lost work (:meth:`RestartPolicy.on_lost_work`): :class:`Retry` or :class:`GiveUp`;
* the lost worker (:meth:`RestartPolicy.on_lost_worker`): :class:`Replace` (the slot to
  start the replacement on), :class:`GiveUp`, or :class:`Raise` (no live node is left to
  run what remains: the run cannot finish);
* a HOGWILD round ended by a death (:meth:`RestartPolicy.on_round_end`): :class:`Retry` (a
  re-planned round) or :class:`GiveUp`.

Who asks:

* K-fold (:mod:`raynn.kfold.queue`, the local and Ray executors through
  :class:`raynn.placement.group.WorkerGroup`): each job gets ``scheduling.max_attempts``
  attempts; the run may replace workers ``jobs x max_attempts`` times in all
  (:meth:`RestartPolicy.for_jobs`).
* The joblib backend's pool: a task gets ``max_attempts`` attempts, and a dead worker is
  always replaced while the pool is open (:meth:`RestartPolicy.unbounded`).
* HOGWILD (:mod:`raynn.hogwild.ray_run`): a death ends the round; the next round re-plans
  the workers, at most ``hogwild.max_restarts`` times (:meth:`RestartPolicy.for_rounds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raynn.errors import RaynnError


@dataclass(frozen=True)
class Replace:
    """Start a replacement worker on ``slot`` (the dead one's, or a live node's spare)."""

    slot: Any


@dataclass(frozen=True)
class Retry:
    """The lost work (or the ended round) runs again."""


@dataclass(frozen=True)
class GiveUp:
    """Nothing is started again; ``reason`` says why."""

    reason: str


@dataclass(frozen=True)
class Raise:
    """The run cannot go on: raise ``error``."""

    error: BaseException


Decision = Replace | Retry | GiveUp | Raise


@dataclass
class RestartPolicy:
    """The decisions after a worker's death, and the count of replacements made.

    Args:
        max_attempts: attempts a unit of work gets (0: no limit; HOGWILD rounds have none).
        budget: replacements (or re-planned rounds) the whole run may make (None: no limit).
        stranded: the error raised when a worker dies, work is left, no live node has a
            slot for a replacement and no other worker runs (None: give up quietly).
    """

    max_attempts: int = 0
    budget: int | None = 0
    restarts: int = 0
    stranded: str | None = None

    @classmethod
    def for_jobs(cls, jobs: int, max_attempts: int, stranded: str | None = None) -> RestartPolicy:
        """K-fold: ``max_attempts`` per job, ``jobs x max_attempts`` replacements."""
        return cls(max_attempts=max_attempts, budget=jobs * max_attempts, stranded=stranded)

    @classmethod
    def for_rounds(cls, max_restarts: int) -> RestartPolicy:
        """HOGWILD: at most ``max_restarts`` re-planned rounds."""
        return cls(budget=max_restarts)

    @classmethod
    def unbounded(cls, max_attempts: int) -> RestartPolicy:
        """A pool that keeps its size: ``max_attempts`` per task, every dead worker replaced."""
        return cls(max_attempts=max_attempts, budget=None)

    # -- typed decisions -----------------------------------------------------------------------
    def on_lost_work(self, attempt: int) -> Retry | GiveUp:
        """Work that was on its ``attempt``-th attempt when its worker died: again, or not."""
        if not self.max_attempts or attempt < self.max_attempts:
            return Retry()
        return GiveUp(f"attempt {attempt} of {self.max_attempts} (max_attempts reached)")

    def on_lost_worker(
        self, slot: Any | None, *, work_left: bool = True, running: bool = True
    ) -> Replace | GiveUp | Raise:
        """A worker died: start a replacement on ``slot`` (None: no live node has one), or not.

        Args:
            slot: where a replacement would go (the dead worker's own slot while its node
                lives, else a spare slot of a live node).
            work_left: whether work is left for a replacement.
            running: whether other workers still run.
        """
        if not work_left:
            return GiveUp("no work left")
        if not self._budget_left():
            return GiveUp(f"the budget of {self.budget} replacement(s) is spent")
        if slot is None:
            if self.stranded and not running:
                return Raise(RaynnError(self.stranded))
            return GiveUp("no live node has a slot for a replacement")
        self.restarts += 1
        return Replace(slot)

    def on_round_end(self, restartable: bool = True) -> Retry | GiveUp:
        """HOGWILD: a round ended by a death; ``restartable``: the worker died (actor or node
        lost), not its training. Counts the restart when it retries."""
        if not restartable:
            return GiveUp("the worker's training failed")
        if not self._budget_left():
            return GiveUp(f"after {self.restarts} restart(s)")
        self.restarts += 1
        return Retry()

    def _budget_left(self) -> bool:
        return self.budget is None or self.restarts < self.budget

    # -- the same decisions as bools (kept for their callers) ----------------------------------
    def retry(self, attempt: int) -> bool:
        """Whether work that was on its ``attempt``-th attempt when its worker died runs again
        (else it fails: ``max_attempts`` reached): :meth:`on_lost_work` is :class:`Retry`."""
        return isinstance(self.on_lost_work(attempt), Retry)

    def may_replace(self, work_left: bool = True) -> bool:
        """Whether a replacement worker (or a new round) may start: work is left and the
        budget is not spent."""
        return work_left and self._budget_left()

    def replace(self, work_left: bool = True) -> bool:
        """:meth:`may_replace`, counting the replacement when it may."""
        if not self.may_replace(work_left):
            return False
        self.restarts += 1
        return True
