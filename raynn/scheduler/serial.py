"""The serial executor: one in-process worker, jobs one at a time, every core given to torch
(or ``threads``): the baseline, and a debug executor that shares the others' code."""

from __future__ import annotations

import os
import socket
import threading

from raynn.scheduler.base import Execution, Executor, register_executor
from raynn.scheduler.cores import usable_cpus
from raynn.scheduler.monitor import UtilizationSampler
from raynn.scheduler.queue import JobQueue
from raynn.scheduler.workers import CoreGroupWorker


class SerialExecutor(Executor):
    """One job at a time in this process, with all cores (or ``threads``) given to torch."""

    name = "serial"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self.cores_by_model = {}

    def prepare(self, n_jobs, cores_per_job, choose=None):
        self.threads = self.threads or len(usable_cpus())
        return self.threads

    def execute(self, jobs, data, run_dir, *, scheduling, progress):
        from raynn.results import ResultsCollector

        queue = JobQueue(jobs, max_attempts=scheduling.max_attempts)
        collector = ResultsCollector(run_dir)
        node = socket.gethostname()
        sampler = UtilizationSampler(node, scheduling.sample_interval, own_tree=os.getpid())
        worker = CoreGroupWorker(
            "serial-0", None, data, queue, collector, node=node, threads=self.threads
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
        progress.close(queue.stats())
        if error:
            raise error[0]
        return Execution(self.name, 1, worker.threads, {node: usable_cpus()})


register_executor("serial", SerialExecutor)
