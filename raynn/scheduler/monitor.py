"""Watching a run: per-core CPU utilisation sampling and the live progress view."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

from raynn.scheduler.queue import QueueStats


class UtilizationSampler:
    """Samples per-core CPU % of this node in a background thread (psutil).

    A plain class: the serial and local executors use it in-process, the Ray executor runs
    one per node as a zero-CPU actor. Given ``own_tree`` (a pid: that process and all its
    descendants) or ``own_pids`` (processes named now or later with :meth:`watch`), each
    row also carries ``own_percent``: the share of that core's time used by raynn's own
    processes, from the CPU-time deltas of each of their threads, spread evenly over the
    cores of that thread's affinity mask (exact for pinned threads). Without either it is
    None (not measured).
    """

    def __init__(
        self,
        node: str,
        interval: float = 0.5,
        *,
        own_tree: int | None = None,
        own_pids: Iterable[int] | None = None,
    ) -> None:
        self.node = node
        self.interval = interval
        self._rows: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tree = own_tree
        self._pids: set[int] = set(own_pids or ())
        self._measure_own = own_tree is not None or own_pids is not None
        self._lock = threading.Lock()
        self._cpu: dict[tuple[int, int], float] = {}  # (pid, tid) -> CPU seconds last seen
        self._seen: set[int] = set()  # pids whose threads have a baseline

    def watch(self, pid: int) -> None:
        """Count process ``pid`` (all its threads) as raynn's own from now on."""
        with self._lock:
            self._pids.add(int(pid))
            self._measure_own = True

    def start(self) -> None:
        """Start sampling (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def _own_processes(self) -> list[Any]:
        import psutil

        with self._lock:
            pids = set(self._pids)
        procs = []
        if self._tree is not None:
            try:
                root = psutil.Process(self._tree)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = []
        known = {p.pid for p in procs}
        for pid in pids - known:
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                pass  # gone: its last interval is lost
        return procs

    def _own_percent(self, cores: int, since: float, now: float, dt: float) -> list[float]:
        """CPU % of each core used by the own processes' threads since the last call."""
        import psutil

        own = [0.0] * cores
        seen: set[int] = set()
        cpu: dict[tuple[int, int], float] = {}
        for proc in self._own_processes():
            try:
                threads = proc.threads()
                fresh = proc.pid not in self._seen and proc.create_time() >= since
            except psutil.Error:
                continue
            seen.add(proc.pid)
            for t in threads:
                total = t.user_time + t.system_time
                cpu[(proc.pid, t.id)] = total
                before = self._cpu.get((proc.pid, t.id))
                if before is None:  # a thread (or process) born since the last sample
                    if proc.pid in self._seen or fresh:
                        before = 0.0
                    else:  # already running when first seen: only a baseline now
                        continue
                try:
                    mask = [c for c in os.sched_getaffinity(t.id) if c < cores]
                except OSError:
                    continue  # the thread ended
                share = max(total - before, 0.0) / dt * 100.0 / max(len(mask), 1)
                for c in mask:
                    own[c] += share
        self._cpu, self._seen = cpu, seen
        return [min(v, 100.0) for v in own]

    def _loop(self) -> None:
        import psutil

        psutil.cpu_percent(percpu=True)  # the first call only primes the counters
        cores = len(psutil.cpu_percent(percpu=True))
        last, last_mono = time.time(), time.monotonic()
        if self._measure_own:
            self._own_percent(cores, last, last, 1.0)  # baselines
        while not self._stop.wait(self.interval):
            now, mono = time.time(), time.monotonic()
            percent = psutil.cpu_percent(percpu=True)
            own: list[float | None] = [None] * len(percent)
            if self._measure_own:
                own = self._own_percent(len(percent), last, now, max(mono - last_mono, 1e-3))
            for core, pct in enumerate(percent):
                self._rows.append(
                    {
                        "node": self.node,
                        "time": now,
                        "core": core,
                        "percent": pct,
                        "own_percent": own[core],
                    }
                )
            last, last_mono = now, mono

    def stop(self) -> list[dict[str, Any]]:
        """Stop sampling and return the rows taken."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return list(self._rows)


def fmt_seconds(s: float) -> str:
    """``s`` seconds as ``m:ss`` (``h:mm:ss`` from an hour on)."""
    s = int(round(s))
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


def _epoch_estimate(stats: QueueStats, model: str, cores: int, prior: float | None) -> float | None:
    """Seconds one epoch of ``model`` on ``cores`` is expected to take, best source first:
    its measured mean on those cores, on the nearest core count measured, or the cost
    model's ``prior`` scaled by what the measured epochs took against their priors."""
    measured = stats.epoch_seconds
    if (model, cores) in measured:
        return measured[(model, cores)]
    other = [c for m, c in measured if m == model]
    if other:
        return measured[(model, min(other, key=lambda c: (abs(c - cores), c)))]
    if prior is None:
        return None
    if stats.measured_prior > 0:
        return prior * stats.measured_seconds / stats.measured_prior
    return prior if stats.prior_seconds else None


def eta_seconds(stats: QueueStats) -> float | None:
    """Seconds until the run ends, from the measured cost of the work that is left.

    Each job's epochs cost what that model's epochs have measured on its cores so far (the
    probe's estimate until then, see :func:`_epoch_estimate`); the work left is the pending
    jobs' full cost plus the running jobs' remaining epochs, in core-seconds, spread over
    the registered cores, and never less than the longest single job left (the tail). None
    while some job's cost cannot be estimated yet (no probe and nothing measured).
    """
    if stats.finished:
        return 0.0
    work = tail = 0.0
    for job in stats.running_jobs:
        per_epoch = _epoch_estimate(stats, job.model, job.cores, job.prior)
        if per_epoch is None:
            return None
        todo = max(job.epochs - job.epoch, 0)
        # the epoch under way has used since_epoch of its time; the ones after it are whole
        left = max(todo * per_epoch - job.since_epoch, (todo - 1) * per_epoch, 0.0)
        work += left * max(job.cores, 1)
        tail = max(tail, left)
    for group in stats.pending_work:
        per_epoch = _epoch_estimate(stats, group.model, group.cores, group.prior)
        if per_epoch is None:
            return None
        seconds = group.epochs * per_epoch
        work += seconds * max(group.cores, 1) * group.jobs
        tail = max(tail, seconds)
    return max(work / max(stats.capacity, 1), tail)


MAX_JOB_ROWS = 16  # running jobs listed by the live view; the rest are counted


def job_rows(stats: QueueStats) -> list[tuple[str, str, str, str, str, str]]:
    """``(job, node, cores, epoch, val loss, elapsed)`` of each running job, by job id."""
    return [
        (
            job.job_id,
            job.node or "-",
            str(job.cores) if job.cores else "-",
            f"{job.epoch}/{job.epochs}",
            "-" if job.loss is None else f"{job.loss:.4f}",
            fmt_seconds(job.elapsed),
        )
        for job in sorted(stats.running_jobs, key=lambda j: j.job_id)
    ]


class Progress:
    """Jobs done/running/failed and an ETA: a live view on a terminal, plain lines otherwise.

    On a terminal, the summary line and a bar are followed by one row per running job
    (node, cores, epoch, last validation loss, elapsed). Elsewhere (a log file, a pipe) the
    summary line is printed when the counts change, or every ``line_interval`` seconds.
    """

    def __init__(
        self,
        title: str,
        epochs_per_job: int,
        stream: TextIO | None = None,
        enabled: bool = True,
        line_interval: float = 5.0,
    ) -> None:
        self.title = title
        self.epochs_per_job = epochs_per_job
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.line_interval = line_interval
        self._live: Any = None
        self._last_line = ""
        self._last_time = 0.0
        if enabled and self.stream.isatty():
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                console=Console(file=self.stream), refresh_per_second=4, transient=False
            )
            self._live.start()

    def line(self, stats: QueueStats) -> str:
        """One-line summary of ``stats``."""
        eta = eta_seconds(stats)
        return (
            f"[{self.title}] {stats.done + stats.failed}/{stats.total} jobs done, "
            f"{stats.running} running, {stats.pending} pending, {stats.failed} failed, "
            f"elapsed {fmt_seconds(stats.elapsed)}, "
            f"ETA {fmt_seconds(eta) if eta is not None else '?'}"
        )

    def update(self, stats: QueueStats) -> None:
        """Show the latest counts."""
        if not self.enabled:
            return
        text = self.line(stats)
        if self._live is not None:
            self._live.update(self._render(stats, text))
            return
        counts = text.split(", elapsed")[0]
        now = time.monotonic()
        if counts != self._last_line or now - self._last_time >= self.line_interval:
            print(text, file=self.stream, flush=True)
            self._last_line, self._last_time = counts, now

    def _render(self, stats: QueueStats, text: str) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        # a bar ends no line of its own: in a grid, the row after it is not drawn over it
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(stats.total, 1), completed=stats.done + stats.failed, width=40),
            f"{100 * (stats.done + stats.failed) / max(stats.total, 1):.0f}%",
        )
        parts: list[Any] = [Text(text), bar]
        rows = job_rows(stats)
        if rows:
            table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False)
            for name, justify in (
                ("job", "left"),
                ("node", "left"),
                ("cores", "right"),
                ("epoch", "right"),
                ("val loss", "right"),
                ("elapsed", "right"),
            ):
                table.add_column(name, justify=justify, no_wrap=True)
            for row in rows[:MAX_JOB_ROWS]:
                table.add_row(*row)
            parts.append(table)
            if len(rows) > MAX_JOB_ROWS:
                parts.append(Text(f"... and {len(rows) - MAX_JOB_ROWS} more running"))
        return Group(*parts)

    def close(self, stats: QueueStats | None = None) -> None:
        """Print the final state and stop the live view."""
        if stats is not None and self.enabled:
            if self._live is not None:
                self._live.update(self._render(stats, self.line(stats)))
            else:
                print(self.line(stats), file=self.stream, flush=True)
        if self._live is not None:
            self._live.stop()
            self._live = None
