"""The scikit-learn face: a joblib backend running each task on a pinned, thread-capped worker.

``import raynn.joblib`` registers it as ``"raynn"`` (:mod:`raynn.joblib`). The pieces:
:mod:`raynn.sklearn.tasks` (the task queue and the run's records, plain),
:mod:`raynn.sklearn.worker` (the worker a Ray actor wraps: pinned to its core group),
:mod:`raynn.sklearn.pool` (the actors, the dispatch loop and its retries) and
:mod:`raynn.sklearn.backend` (joblib's ``ParallelBackendBase`` over the pool).
"""
