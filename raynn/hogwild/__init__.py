"""HOGWILD: lock-free SGD on shared-memory weights per node, a Ray parameter server across nodes.

Modules (DESIGN.md section 3):

* :mod:`~raynn.hogwild.spec`: the ``kind: hogwild`` spec.
* :mod:`~raynn.hogwild.shared_params`: a node's weights as one flat float32 shared buffer.
* :mod:`~raynn.hogwild.server`: the parameter server (global weights, versions, staleness).
* :mod:`~raynn.hogwild.trainer`: the step code, the worker and the node's sync role.
* :mod:`~raynn.hogwild.runner`: ``run(spec, executor="ray" | "serial")`` and ``validate``.
* :mod:`~raynn.hogwild.report`: the markdown summary (accuracy against time).
* :mod:`~raynn.hogwild.compat`: the seed project's ``DistributedTrainer`` / ``DistributedTester``.
"""

from __future__ import annotations

from raynn.hogwild.spec import HogwildSpec, hogwild_spec_from_dict

__all__ = ["HogwildSpec", "hogwild_spec_from_dict"]
