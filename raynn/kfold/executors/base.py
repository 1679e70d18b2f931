"""What every executor is: the :class:`Executor` interface, what it reports, its registry.

An executor runs a job list: same jobs, same worker loop, different dispatch. Executors
register a factory under their name in :data:`EXECUTORS` (:func:`register_executor`, as
joblib registers parallel backends); :mod:`raynn.kfold.executors.factory` looks them up.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from raynn.core.data import ArrayDataset
from raynn.kfold.grid import Job
from raynn.kfold.racing import Race
from raynn.placement.cores import check_cores_per_job, resolve_cores_per_job
from raynn.placement.progress import Progress
from raynn.spec import SchedulingSpec


@dataclass
class Execution:
    """What an executor did: recorded in ``run.json``."""

    executor: str
    workers: int
    cores_per_job: int
    nodes: dict[str, list[int]] = field(default_factory=dict)
    worker_restarts: int = 0
    cores_by_model: dict[str, int] = field(default_factory=dict)  # ``auto``'s choice


Chooser = Callable[[list[int]], dict[str, int]]


class Executor(ABC):
    """Runs a list of jobs and writes each result through a collector.

    Attributes:
        parallel: whether jobs run side by side on worker processes (False: one at a time,
            in this process, on ``threads`` threads).
        cores_by_model: per-model cores per job that ``size_groups`` chose for
            ``cores_per_job: auto`` (empty: every job runs on one group of the returned size).
        domain_sizes: the cores of every NUMA domain of every node ``size_groups`` found.
        max_workers: cap on workers (None: one per core group).
    """

    name: str = ""
    parallel: bool = True  # False: one job at a time in this process (the serial baseline)
    cores_by_model: dict[str, int]
    domain_sizes: Sequence[int] = ()
    max_workers: int | None = None

    def slots(self, cores: int) -> int:
        """How many jobs of ``cores`` cores each can run at once (0 before ``size_groups``)."""
        groups = sum(size // max(cores, 1) for size in self.domain_sizes)
        return min(groups, self.max_workers or groups)

    def stage(self, data: ArrayDataset) -> None:  # noqa: B027 - optional hook
        """Receive the dataset as soon as it is loaded (before jobs are planned or probed)."""

    @abstractmethod
    def size_groups(
        self, n_jobs: int, cores_per_job: int | str, choose: Chooser | None = None
    ) -> int:
        """Connect to compute and check the core setting; returns the workers' group size.

        With ``cores_per_job == "auto"`` and ``choose`` given (the probe's choice),
        ``choose(cores of each node)`` picks each model's cores per job into
        :attr:`cores_by_model`, and the groups are the smallest of those; otherwise the
        contract's default rule picks one size for every job.
        """

    @abstractmethod
    def execute(
        self,
        jobs: list[Job],
        data: ArrayDataset,
        run_dir: str,
        *,
        scheduling: SchedulingSpec,
        progress: Progress,
        race: Race | None = None,
    ) -> Execution:
        """Run ``jobs`` to completion, writing results under ``run_dir``; with ``race``
        (``scheduling.racing``), the queue races the folds (:mod:`raynn.kfold.racing`)."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what :meth:`size_groups` acquired (workers' nodes, an embedded Ray)."""


EXECUTORS: dict[str, Callable[..., Executor]] = {}


def register_executor(name: str, factory: Callable[..., Executor]) -> None:
    """Make ``factory`` (an :class:`Executor` class or a function returning one) the
    executor called ``name``."""
    EXECUTORS[name] = factory


def choose_group_size(
    cores_per_job: int | str, n_jobs: int, node_sizes: Sequence[int], choose: Chooser | None
) -> tuple[int, dict[str, int]]:
    """The workers' group size and, for ``auto`` with the probe, each model's cores per job.

    ``node_sizes``: the cores of every NUMA node of every node (a group never spans two).
    """
    if cores_per_job != "auto":
        check_cores_per_job(int(cores_per_job), node_sizes)
    if cores_per_job == "auto" and choose is not None:
        by_model = choose(list(node_sizes))
        size = min(by_model.values(), default=1)
    else:
        by_model = {}
        size = resolve_cores_per_job(cores_per_job, n_jobs, sum(node_sizes))
    return min(size, max(node_sizes)), by_model
