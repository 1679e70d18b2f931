"""HOGWILD: lock-free SGD on shared-memory weights per node, a Ray parameter server across nodes.

The entry is :func:`raynn.hogwild.runner.run` (in the table of kinds, :mod:`raynn.kinds`);
its spec is :mod:`raynn.spec.hogwild`. Below it: ``prepare`` (data, initial weights),
``serial`` (the baseline), ``ray_run``, ``rounds`` and ``round_workers`` (the server
shards, the workers, the restart loop), ``plan`` and ``context`` (where workers go, what each
needs), ``segments`` and ``shared_params`` (a node's weights in shared memory), ``worker``, ``loop``
and ``node_sync`` (the step code and a node's link to the server), ``server``, ``client``,
``protocol`` and ``checkpoint`` (the parameter server), ``evaluator``, ``tables``, ``view``
and ``report``. The seed project's ``DistributedTrainer`` is :mod:`raynn.compat.hogwild`
(docs/DESIGN.md has the whole house).
"""

from __future__ import annotations

from raynn.hogwild import tables  # noqa: F401 - registers the eval/ and hogwild/ schemas
from raynn.spec.hogwild import HogwildSpec, hogwild_spec_from_dict

__all__ = ["HogwildSpec", "hogwild_spec_from_dict"]
