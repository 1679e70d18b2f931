"""raynn: pack CPU deep-learning training jobs onto pinned core groups with Ray.

Public API::

    from raynn import load_spec, run
    result = run(load_spec("jobs/kfold_digits.yaml"))          # this machine's cores
    result = run(spec, executor="ray")                         # an embedded local Ray
    result = run(spec, executor="ray", address="auto")         # a running Ray cluster
    result = run(spec, executor="serial")                      # the serial baseline
"""

from __future__ import annotations

__version__ = "0.1.0"

from raynn.errors import (  # noqa: E402
    CheckpointError,
    DatasetError,
    OutputError,
    RaynnError,
    SpecError,
    TrainingError,
)
from raynn.spec import KFoldSpec, load_spec, spec_from_dict  # noqa: E402


def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - re-exported, see raynn.kfold.run
    """Run a K-fold spec; see :func:`raynn.kfold.run`."""
    from raynn.kfold import run as _run

    return _run(*args, **kwargs)


__all__ = [
    "CheckpointError",
    "DatasetError",
    "KFoldSpec",
    "OutputError",
    "RaynnError",
    "SpecError",
    "TrainingError",
    "load_spec",
    "run",
    "spec_from_dict",
]
