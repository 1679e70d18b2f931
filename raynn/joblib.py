"""``import raynn.joblib`` registers the ``raynn`` joblib backend.

    import joblib
    import raynn.joblib  # registers "raynn"

    with joblib.parallel_backend("raynn", cores_per_task=1):  # address="auto" for a cluster
        GridSearchCV(net, grid, cv=5, n_jobs=-1).fit(X, y)

    with raynn.joblib.parallel_backend(cores_per_task=1):  # one pool for every call inside
        for net in nets:
            GridSearchCV(net, grid, cv=5, n_jobs=-1).fit(X, y)

Each task runs on a Ray actor pinned to its own core group of ``cores_per_task`` cores, its
thread pools capped to that many threads; nested Parallel calls run sequentially; a task
whose worker dies is retried on a fresh one. Under joblib's ``parallel_backend`` the workers
live for one Parallel call (one ``fit``); under raynn's :func:`parallel_backend`, for the
whole block. :func:`last_run` summarises the last pool's tasks (where each ran, pinned to
what, how long) and its CPU utilisation. The backend is
:class:`raynn.sklearn.backend.RaynnBackend`.
"""

from __future__ import annotations

import joblib

from raynn.sklearn.backend import NAME, RaynnBackend, last_run, parallel_backend
from raynn.sklearn.tasks import BackendOptionError, RunSummary, TaskLostError, TaskRecord


def register() -> None:
    """Register the backend as ``"raynn"`` (done on import; idempotent)."""
    joblib.register_parallel_backend(NAME, RaynnBackend)


register()

__all__ = [
    "BackendOptionError",
    "RaynnBackend",
    "RunSummary",
    "TaskLostError",
    "TaskRecord",
    "last_run",
    "parallel_backend",
    "register",
]
