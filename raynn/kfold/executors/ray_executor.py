"""The ray executor: a Ray cluster (``--address``, ``RAY_ADDRESS`` under ``ray job submit``,
or an embedded local Ray), its nodes probed for their CPUs, the run driven by
:class:`~raynn.kfold.executors.ray_run.RayRun`: a JobQueue actor, a ResultsCollector actor on the
driver's node, a utilisation sampler per node, and one CoreGroupWorker actor per core group
on every node, each pinned to its disjoint CPUs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from raynn.kfold.executors.base import Execution, Executor, choose_group_size, register_executor
from raynn.kfold.executors.ray_run import RayRun
from raynn.placement import nodes as nodes_mod
from raynn.placement import session
from raynn.placement.cores import check_cores_per_job, usable_cpus
from raynn.placement.nodes import Node, NodeGroup


class RayExecutor(Executor):
    """Pinned, long-lived worker actors pulling from a central queue actor.

    Args:
        address: a Ray cluster address (``auto``, ``ray://...``, ``host:port``); None starts an
            embedded local Ray, unless ``RAY_ADDRESS`` is set (as under ``ray job submit``).
        num_cpus: CPUs of the embedded local Ray (default: this process's affinity).
        max_workers: cap on worker actors (default: one per core group).
        smt: ``together`` or ``idle`` (:mod:`raynn.placement.topology`).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        max_workers: int | None = None,
        smt: str = "together",
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.max_workers = max_workers
        self.smt = smt
        self._owns_ray = False
        self._nodes: list[Node] = []
        self._cores_per_job = 1
        self.cores_by_model = {}

    # -- nodes ----------------------------------------------------------------------------------
    def probe_nodes(self, known: Sequence[Node] = ()) -> list[Node]:
        """Alive nodes with CPUs that are not in ``known`` (:func:`raynn.placement.nodes.
        probe_nodes`), probed through :meth:`start_probes`."""
        return nodes_mod.finish_probes(known, self.start_probes({n.node_id for n in known}))

    def start_probes(self, exclude: set[str]) -> list[tuple[dict[str, Any], Any]]:
        """:func:`raynn.placement.nodes.start_probes` with this executor's ``smt``."""
        return nodes_mod.start_probes(exclude, self.smt)

    def nodes_from(
        self, known: Sequence[Node], probed: Sequence[tuple[dict[str, Any], Any]]
    ) -> list[Node]:
        """:func:`raynn.placement.nodes.nodes_from`."""
        return nodes_mod.nodes_from(known, probed)

    def node_groups(self, nodes: Sequence[Node]) -> list[NodeGroup]:
        """(node, core group) pairs of ``nodes``, round-robin over the nodes."""
        return nodes_mod.node_groups(nodes, self._cores_per_job)

    # -- lifecycle ------------------------------------------------------------------------------
    def size_groups(self, n_jobs, cores_per_job, choose=None):

        embedded = session.will_embed(self.address)
        if embedded and cores_per_job != "auto":  # fail before starting Ray at all
            check_cores_per_job(int(cores_per_job), [self.num_cpus or len(usable_cpus())])
        self._owns_ray = session.connect(self.address, self.num_cpus) or self._owns_ray
        self._nodes = (
            nodes_mod.session_nodes(True, self.num_cpus, self.smt)
            if embedded
            else self.probe_nodes()  # through start_probes, which tests replace
        )
        sizes = self.domain_sizes = [len(d) for n in self._nodes for d in n.cores.domains]
        self._cores_per_job, self.cores_by_model = choose_group_size(
            cores_per_job, n_jobs, sizes, choose
        )
        return self._cores_per_job

    def execute(self, jobs, data, run_dir, *, scheduling, progress, race=None) -> Execution:
        run = RayRun(
            list(self._nodes),
            jobs,
            data,
            run_dir,
            scheduling,
            progress,
            group_size=self._cores_per_job,
            cores_by_model=self.cores_by_model,
            max_workers=self.max_workers,
            start_probes=self.start_probes,
            race=race,
        )
        self.current = run  # exposed for monitoring and fault-injection tests
        return run.run()

    def close(self) -> None:
        session.shutdown_if_started(self._owns_ray)
        self._owns_ray = False


register_executor("ray", RayExecutor)
