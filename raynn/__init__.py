"""raynn: pack CPU deep-learning training jobs onto pinned core groups with Ray.

Public API::

    from raynn import load_spec, run
    result = run(load_spec("jobs/kfold_digits.yaml"))          # this machine's cores
    result = run(spec, executor="ray")                         # an embedded local Ray
    result = run(spec, executor="ray", address="auto")         # a running Ray cluster
    result = run(spec, executor="serial")                      # the serial baseline
    model = load_model(result.run_dir)      # output.keep_models / refit: a trained model

    spec = spec_from_dict({"models": ["mlp"], "optimizer": {"name": "adam",
                           "lr": loguniform(1e-4, 1e-1)}, "search": {"samples": 20}})
                                            # search domains: grid, choice, uniform, ...
"""

from __future__ import annotations

from raynn._version import __version__
from raynn.errors import (  # noqa: E402
    CheckpointError,
    DatasetError,
    OutputError,
    RaynnError,
    SpecError,
    TrainingError,
)
from raynn.spec import KFoldSpec, load_spec, spec_from_dict  # noqa: E402
from raynn.spec.search import choice, grid, loguniform, randint, uniform  # noqa: E402


def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - re-exported, see raynn.api.run
    """Run a spec of any kind (or ``resume=`` a run directory); see :func:`raynn.api.run`."""
    from raynn.api import run as _run

    return _run(*args, **kwargs)


def load_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - re-exported
    """A trained model of a run directory; see :func:`raynn.kfold.saved.load_model`."""
    from raynn.kfold.saved import load_model as _load_model

    return _load_model(*args, **kwargs)


def loss_from_criterion(criterion):  # noqa: ANN001, ANN201 - re-exported
    """The ``training.loss`` of a torch criterion.

    See :func:`raynn.core.losses.loss_from_criterion`.
    """
    from raynn.core.losses import loss_from_criterion as _loss_from_criterion

    return _loss_from_criterion(criterion)


__all__ = [
    "__version__",
    "CheckpointError",
    "DatasetError",
    "KFoldSpec",
    "OutputError",
    "RaynnError",
    "SpecError",
    "TrainingError",
    "choice",
    "grid",
    "load_model",
    "load_spec",
    "loguniform",
    "loss_from_criterion",
    "randint",
    "run",
    "spec_from_dict",
    "uniform",
]
