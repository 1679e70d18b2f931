"""The seed project's API on raynn: ``AsyncKFold``, ``DistributedTrainer``, ``DistributedTester``.

Usage, as in the original project (``examples/`` has the five scripts)::

    from raynn.compat import AsyncKFold, DistributedTester, DistributedTrainer

* :mod:`raynn.compat.kfold`: ``AsyncKFold`` (K-fold cross-validation of models x schedulers).
* :mod:`raynn.compat.hogwild`: ``DistributedTrainer`` / ``DistributedTester`` (HOGWILD).
* :mod:`raynn.compat.data`: the one converter of the seed's datasets and models for both.
"""

from __future__ import annotations

from raynn.compat.data import InputMapping, attach_input_mapping, detach_input_mapping
from raynn.compat.hogwild import DistributedTester, DistributedTrainer
from raynn.compat.kfold import AsyncKFold, arrays_from_dataset

__all__ = [
    "AsyncKFold",
    "DistributedTester",
    "DistributedTrainer",
    "InputMapping",
    "arrays_from_dataset",
    "attach_input_mapping",
    "detach_input_mapping",
]
