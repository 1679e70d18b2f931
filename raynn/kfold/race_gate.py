"""What fold racing does to the job queue (:class:`RaceGate`, a part of
:class:`raynn.kfold.queue.JobQueue`): the order jobs go out in, and the jobs it cancels.

With racing on the jobs go out staggered (:meth:`raynn.kfold.racing.Race.order`: every
configuration's first fold early), so that the race decides before most of a bad
configuration's folds have run. Each ok fold's metric goes to the race; a configuration it
races out has its pending jobs cancelled (each handed back once, for its ``raced_out`` row)
and its running jobs told to stop at their next epoch boundary. Raced-out jobs count as
done: nothing is left to do for them. Without a race the gate lets everything through.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping

from raynn.kfold.grid import Job
from raynn.kfold.racing import Config, Race, config_of


class RaceGate:
    """Fold racing's effect on the queue; see the module docstring.

    Args:
        race: the run's race (``scheduling.racing``), or None with racing off.
    """

    def __init__(self, race: Race | None = None) -> None:
        self.race = race
        self.raced: dict[str, str] = {}  # raced-out job -> reason (counted as done)
        self._stop: dict[str, str] = {}  # running jobs to stop at their next epoch -> reason
        self._unrecorded: list[tuple[Job, str]] = []  # cancelled, their rows not yet written

    def order(self, jobs: Iterable[Job]) -> list[Job]:
        """``jobs`` in the order they go out: staggered by configuration with a race (whose
        configurations they are), else as given (longest first)."""
        if self.race is None:
            return list(jobs)
        ordered = Race.order(jobs)
        self.race.add(config_of(j) for j in ordered)
        return ordered

    def start(self, pending: deque[Job]) -> None:
        """Cancel the pending jobs of the configurations raced out before (a resumed run)."""
        self._race_out(list(self.race.out) if self.race else [], pending, {})

    def _race_out(
        self, configs: list[Config], pending: deque[Job], running: Mapping[str, Job]
    ) -> None:
        """Cancel the ``pending`` jobs of ``configs`` and stop their ``running`` ones."""
        reasons = {c: self.race.reason(c) for c in configs} if self.race else {}
        for job in [j for j in pending if config_of(j) in reasons]:
            pending.remove(job)
            self.raced[job.job_id] = reasons[config_of(job)]
            self._unrecorded.append((job, reasons[config_of(job)]))
        for job_id, job in running.items():
            if config_of(job) in reasons:
                self._stop[job_id] = reasons[config_of(job)]

    def stop_reason(self, job_id: str, epoch: int, epochs: int) -> str | None:
        """Why running ``job_id`` stops after ``epoch`` of its ``epochs``, or None when it
        trains on (a fold past its last epoch keeps its result)."""
        if job_id in self._stop and epoch < epochs:
            return self._stop[job_id]
        return None

    def ended(self, job_id: str) -> None:
        """``job_id`` ended: nothing to stop any more."""
        self._stop.pop(job_id, None)

    def stopped(self, job_id: str, reason: str | None) -> None:
        """``job_id``'s worker stopped it: it is raced out (its worker writes its row)."""
        self.raced[job_id] = reason or "raced out"

    def scored(
        self, job: Job, metrics: dict[str, float], pending: deque[Job], running: Mapping[str, Job]
    ) -> None:
        """``job`` ended ok with ``metrics``: the race takes its metric, and the
        configurations it races out lose their ``pending`` jobs and stop their ``running``
        ones (job id -> job)."""
        if self.race is None or not metrics:
            return
        value = metrics.get(self.race.spec.metric, math.nan)
        decisions = self.race.record(config_of(job), job.fold, value)
        self._race_out([d.config for d in decisions], pending, running)

    def died(self, job_id: str, job: Job) -> bool:
        """``job``'s worker died: True when it had been told to stop (it is raced out, its
        row is recorded with the next :meth:`take_cancelled`, no retry)."""
        reason = self._stop.pop(job_id, None)
        if reason is None:
            return False
        self.raced[job_id] = reason
        self._unrecorded.append((job, reason))
        return True

    def take_cancelled(self) -> list[tuple[Job, str]]:
        """The jobs cancelled since the last call, with the reason, for their rows."""
        cancelled, self._unrecorded = self._unrecorded, []
        return cancelled
