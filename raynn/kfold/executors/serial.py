"""The serial executor: one in-process worker, jobs one at a time, every core given to torch
(or ``threads``): the baseline, and a debug executor that shares the others' code."""

from __future__ import annotations

import os
import socket
import threading

from raynn.kfold.executors.base import Execution, Executor, register_executor
from raynn.kfold.queue import JobQueue
from raynn.kfold.workers import CoreGroupWorker, WorkerContext
from raynn.placement.cores import usable_cpus
from raynn.placement.monitor import UtilizationSampler


class SerialExecutor(Executor):
    """One job at a time in this process, with all cores (or ``threads``) given to torch."""

    name = "serial"
    parallel = False

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self.cores_by_model = {}

    def size_groups(self, n_jobs, cores_per_job, choose=None):
        self.threads = self.threads or len(usable_cpus())
        return self.threads

    def execute(self, jobs, data, run_dir, *, scheduling, progress, race=None):
        from raynn.kfold.collector import ResultsCollector

        queue = JobQueue(jobs, max_attempts=scheduling.max_attempts, race=race)
        collector = ResultsCollector(run_dir)
        node = socket.gethostname()
        sampler = UtilizationSampler(node, scheduling.sample_interval, own_tree=os.getpid())
        worker = CoreGroupWorker(
            WorkerContext("serial-0", queue, collector, node=node, threads=self.threads), data
        )
        error: list[BaseException] = []

        def target() -> None:
            try:
                worker.run()
            except BaseException as exc:  # surfaced in the driver thread below
                error.append(exc)

        thread = threading.Thread(target=target, name="raynn-serial", daemon=True)
        sampler.start()
        thread.start()
        try:
            while thread.is_alive():
                progress.update(queue.stats())
                thread.join(0.5)
        finally:
            collector.write_utilization(node, sampler.stop())
            collector.close()
        progress.close(queue.stats())
        if error:
            raise error[0]
        return Execution(self.name, 1, worker.threads, {node: usable_cpus()})


register_executor("serial", SerialExecutor)
