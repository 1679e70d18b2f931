"""How a run answers a lost worker, in one object (like Ray Train's ``FailurePolicy``).

A worker dies (its process killed, its node gone, its lease expired): its work goes back to
the queue unless it has used up its attempts, and a replacement worker starts while work is
pending, as long as the run's budget of replacements lasts. Both kinds ask the same
:class:`RestartPolicy`:

* K-fold (:mod:`raynn.kfold.queue`, the local and Ray executors): each job gets
  ``scheduling.max_attempts`` attempts; the run may replace workers ``jobs x max_attempts``
  times in all (:meth:`RestartPolicy.for_jobs`).
* HOGWILD (:mod:`raynn.hogwild.ray_run`): a death ends the round; the next round re-plans
  the workers, at most ``hogwild.max_restarts`` times (:meth:`RestartPolicy.for_rounds`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RestartPolicy:
    """The decisions after a worker's death, and the count of replacements made.

    Args:
        max_attempts: attempts a unit of work gets (0: no limit; HOGWILD rounds have none).
        budget: replacements (or re-planned rounds) the whole run may make.
    """

    max_attempts: int = 0
    budget: int = 0
    restarts: int = 0

    @classmethod
    def for_jobs(cls, jobs: int, max_attempts: int) -> RestartPolicy:
        """K-fold: ``max_attempts`` per job, ``jobs x max_attempts`` replacements."""
        return cls(max_attempts=max_attempts, budget=jobs * max_attempts)

    @classmethod
    def for_rounds(cls, max_restarts: int) -> RestartPolicy:
        """HOGWILD: at most ``max_restarts`` re-planned rounds."""
        return cls(budget=max_restarts)

    def retry(self, attempt: int) -> bool:
        """Whether work that was on its ``attempt``-th attempt when its worker died runs again
        (else it fails: ``max_attempts`` reached)."""
        return not self.max_attempts or attempt < self.max_attempts

    def may_replace(self, work_left: bool = True) -> bool:
        """Whether a replacement worker (or a new round) may start: work is left and the
        budget is not spent."""
        return work_left and self.restarts < self.budget

    def replace(self, work_left: bool = True) -> bool:
        """:meth:`may_replace`, counting the replacement when it may."""
        if not self.may_replace(work_left):
            return False
        self.restarts += 1
        return True
