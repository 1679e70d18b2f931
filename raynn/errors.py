"""One error hierarchy for raynn.

Every error a user can cause (a bad spec, a missing dataset, an unwritable output directory,
a NaN loss, a corrupt checkpoint) is a :class:`RaynnError`. The CLI prints its message as one
line on stderr and exits with code 2; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations


class RaynnError(Exception):
    """Base class of every error raynn raises on purpose."""


class SpecError(RaynnError):
    """A job spec is malformed: unknown key, bad value, unknown name."""


class DatasetError(RaynnError):
    """A dataset cannot be found or read."""


class OutputError(RaynnError):
    """The output (run) directory cannot be written, or is already in use."""


class TrainingError(RaynnError):
    """A job failed while training (for example its loss became NaN)."""


class CheckpointError(RaynnError):
    """A checkpoint is corrupt or does not match its job."""
