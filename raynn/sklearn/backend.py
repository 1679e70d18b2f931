"""The ``raynn`` joblib backend: joblib's ``ParallelBackendBase`` over a :class:`WorkerPool`.

Life cycle, through joblib's own hooks only. joblib builds one backend object per
``parallel_backend("raynn", ...)`` / ``parallel_config`` context (its options are checked
there, so a bad one fails before anything starts). The first Parallel call starts the pool
(Ray, and one pinned worker per core group). joblib ends every Parallel call, or every
``with Parallel(...)`` block (as ``GridSearchCV.fit`` runs its grid), with ``terminate``
(``abort_everything`` on a failure), and that shuts the pool down, and Ray with it if the pool
started it: joblib tells a backend nothing of a context's end. To pay the start-up once for
several Parallel calls, run them inside :func:`parallel_backend` (raynn's own context
manager): its backend keeps the pool from call to call and shuts it down when the block
ends, however it ends.

Nested parallelism is capped: a Parallel call inside a task runs sequentially in that task
(:meth:`RaynnBackend.get_nested_backend`), on the task's own threads.
"""

from __future__ import annotations

import numbers
import weakref
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from joblib.parallel import ParallelBackendBase, SequentialBackend, parallel_config

from raynn.placement import session
from raynn.sklearn.pool import WorkerPool, local_slot_count
from raynn.sklearn.tasks import BackendOptionError, RunSummary

NAME = "raynn"
OPTIONS = ("address", "cores_per_task", "max_attempts", "num_cpus", "sample_interval")
_last: list[RunSummary] = []


def _whole(name: str, value: Any, fix: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise BackendOptionError(
            f"joblib backend 'raynn': {name} must be a whole number >= 1, got {value!r}; {fix}"
        )


def check_options(
    cores_per_task: Any, address: Any, num_cpus: Any, max_attempts: Any, sample_interval: Any
) -> None:
    """Raise :class:`BackendOptionError` (one line: the option, the value, the fix)."""
    _whole("cores_per_task", cores_per_task, "pass cores_per_task=1 (one core per task) or more")
    _whole("num_cpus", num_cpus, "leave it out to use this process's CPUs", allow_none=True)
    _whole("max_attempts", max_attempts, "pass max_attempts=3 (the default) or another count")
    if address is not None and not (isinstance(address, str) and address.strip()):
        raise BackendOptionError(
            f"joblib backend 'raynn': address must be a Ray address such as 'auto' or "
            f"'HOST:PORT', got {address!r}; leave it out for an embedded Ray"
        )
    if (
        isinstance(sample_interval, bool)
        or not isinstance(sample_interval, numbers.Real)
        or sample_interval <= 0
    ):
        raise BackendOptionError(
            f"joblib backend 'raynn': sample_interval must be seconds > 0, got "
            f"{sample_interval!r}; leave it out for 0.5"
        )


class RaynnBackend(ParallelBackendBase):
    """Runs each joblib batch on a pinned, thread-capped worker; see the module docstring.

    Args:
        nesting_level: joblib's (set by joblib).
        inner_max_num_threads: not accepted: the thread cap is ``cores_per_task``.
        cores_per_task: cores of each worker's core group; each task runs on them with as
            many threads (torch, OpenMP, MKL, OpenBLAS).
        address: a Ray cluster (``auto``, ``HOST:PORT``, ``ray://...``); None starts an
            embedded local Ray (or joins ``RAY_ADDRESS`` where it is set).
        num_cpus: CPUs of an embedded Ray (default: this process's affinity).
        max_attempts: attempts a task gets when its worker dies (default 3).
        sample_interval: seconds between utilisation samples.

    Raises:
        BackendOptionError: an unknown option or a bad value.
    """

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True  # so that joblib hands it over: refused below
    supports_sharedmem = False
    uses_threads = False
    default_n_jobs = -1

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        *,
        cores_per_task: int = 1,
        address: str | None = None,
        num_cpus: int | None = None,
        max_attempts: int = 3,
        sample_interval: float = 0.5,
        **unknown: Any,
    ) -> None:
        if unknown:
            name = sorted(unknown)[0]
            raise BackendOptionError(
                f"joblib backend 'raynn': unknown option {name!r}; valid options: "
                f"{', '.join(OPTIONS)}"
            )
        check_options(cores_per_task, address, num_cpus, max_attempts, sample_interval)
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        self.cores_per_task = int(cores_per_task)
        self.address = address
        self.num_cpus = num_cpus
        self.max_attempts = int(max_attempts)
        self.sample_interval = float(sample_interval)
        self.pool: WorkerPool | None = None
        self.summary: RunSummary | None = None  # the last pool's, once it is shut down
        self.keep_pool = False  # across Parallel calls: inside raynn's parallel_backend
        self._finalizer: Any = None

    @property
    def inner_max_num_threads(self) -> None:
        """Always None: each task runs with ``cores_per_task`` threads."""
        return None

    @inner_max_num_threads.setter
    def inner_max_num_threads(self, value: int | None) -> None:
        if value is not None:
            raise BackendOptionError(
                "joblib backend 'raynn': inner_max_num_threads is not accepted; each task "
                "runs with cores_per_task threads, so pass cores_per_task instead"
            )

    # -- the pool ------------------------------------------------------------------------------
    def _ensure_pool(self) -> WorkerPool:
        if self.pool is None:
            pool = WorkerPool(
                self.cores_per_task,
                self.address,
                self.num_cpus,
                self.max_attempts,
                self.sample_interval,
            )
            pool.start()
            self.pool = pool
            self._finalizer = weakref.finalize(self, pool.shutdown)
        return self.pool

    def _slots(self) -> int:
        if self.pool is not None:
            return len(self.pool.slots)
        if session.will_embed(self.address):
            return local_slot_count(self.cores_per_task, self.num_cpus)
        return len(self._ensure_pool().slots)

    def shutdown(self) -> None:
        """Stop the workers (and Ray, if this backend started it); keep their summary."""
        pool, self.pool = self.pool, None
        if pool is None:
            return
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        pool.shutdown()
        self.summary = pool.summary
        _last[:] = [pool.summary]

    # -- joblib's API --------------------------------------------------------------------------
    def _n_jobs(self, n_jobs: int | None) -> int:
        """Tasks that run at once: ``n_jobs`` capped by the core groups (-1: all of them)."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        slots = max(self._slots(), 1)
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            n_jobs = slots + 1 + n_jobs
        return max(1, min(n_jobs, slots))

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """What joblib is told: the tasks that run at once, but at least 2.

        joblib runs a call in the calling process, unpinned, whenever its backend reports
        one worker; a pool of one worker (or ``n_jobs=1``) says 2 so that the tasks still
        run on a pinned worker, and the pool runs them one at a time (its ``limit``).
        """
        return max(2, self._n_jobs(n_jobs))

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: Any = None,
        require: Any = None,
        **_: Any,
    ) -> int:
        """Start the pool unless it is up (joblib's per-call options are not used)."""
        limit = self._n_jobs(n_jobs)
        self.parallel = parallel
        self._ensure_pool().limit = limit
        return max(2, limit)

    def submit(self, func: Any, callback: Any = None) -> Future:
        """Queue one batch; ``callback`` runs when it is done (joblib's completion hook)."""
        future = self._ensure_pool().submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: Future) -> Any:
        """The batch's result, or the exception it raised."""
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A task failed: drop the batches not yet started (running ones finish)."""
        if self.pool is not None:
            self.pool.cancel_pending()
        if not ensure_ready and not self.keep_pool:
            self.shutdown()

    def terminate(self) -> None:
        """The end of a Parallel call (or ``with Parallel()`` block): shut the pool down,
        unless :func:`parallel_backend` keeps it for the calls to come."""
        if not self.keep_pool:
            self.shutdown()

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        """Nested Parallel calls inside a task run sequentially, on the task's threads."""
        return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None


def last_run() -> RunSummary | None:
    """The summary of the last ``raynn`` backend pool shut down in this process (or None)."""
    return _last[0] if _last else None


@contextmanager
def parallel_backend(n_jobs: int = -1, **options: Any) -> Iterator[RaynnBackend]:
    """Run the Parallel calls inside on one ``raynn`` pool: started by the first, kept across
    the others, shut down (and Ray with it, if the pool started it) when the block ends.

    ``with raynn.joblib.parallel_backend(cores_per_task=1): ...`` is joblib's
    ``parallel_backend("raynn", cores_per_task=1)``, whose pool lives for one Parallel call
    (see the module docstring), but for that. A nested ``parallel_config`` inside it keeps
    the pool too. Yields the backend (``backend.pool``: the pool while it is up).

    Args:
        n_jobs: as joblib's (-1: every core group).
        **options: the backend's (:class:`RaynnBackend`); a bad one raises
            :class:`BackendOptionError` here, before anything starts.
    """
    backend = RaynnBackend(**options)
    backend.keep_pool = True
    try:
        with parallel_config(backend=backend, n_jobs=n_jobs):
            yield backend
    finally:
        backend.keep_pool = False
        backend.shutdown()
