"""The live progress view of a run: what it draws (:class:`QueueStats`), the ETA, the view.

The K-fold queue (:meth:`raynn.kfold.queue.JobQueue.stats`) fills :class:`QueueStats`, its
measured costs kept by :class:`EpochCosts`; the HOGWILD view (:mod:`raynn.hogwild.view`)
draws samples trained in the same frame.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class RunningJob:
    """A leased job as the progress view shows it."""

    job_id: str
    model: str  # the model's label
    node: str  # the worker's node ("" for a worker that registered none: the serial one)
    cores: int  # cores it holds now (0: not known, the serial executor's one worker)
    epoch: int  # epochs done
    epochs: int
    loss: float | None  # validation loss of its last epoch (None before the first)
    elapsed: float  # seconds since its lease
    since_epoch: float  # seconds since its last epoch ended (or since its lease)
    prior: float | None  # the cost model's seconds (or cost units) per epoch on its cores


@dataclass
class PendingWork:
    """Pending jobs of one model that will run on the same number of cores."""

    model: str
    cores: int  # 0: not known (the serial executor)
    epochs: int  # per job
    jobs: int
    prior: float | None  # the cost model's seconds (or cost units) per epoch on its cores


@dataclass
class QueueStats:
    """Counts for the progress view, and what its ETA is computed from
    (:func:`raynn.placement.monitor.eta_seconds`).

    ``epoch_seconds`` holds the measured seconds per epoch of each ``(model label, cores)``
    pair, a mean of the epoch ends reported so far, recent ones weighing most (a change of
    load shows within tens of epochs); the ``prior`` of each job is the cost model's guess
    before that, in seconds when ``prior_seconds`` (the probe measured every model: seconds
    at one thread over the job's threads), else in FLOP units (only ratios mean something:
    ``measured_seconds / measured_prior`` converts them to seconds).
    ``capacity``: the cores registered by workers (0: one job at a time, the serial executor).
    """

    total: int
    pending: int
    running: int
    done: int
    failed: int
    elapsed: float
    done_seconds: list[float] = field(default_factory=list)
    running_jobs: list[RunningJob] = field(default_factory=list)
    pending_work: list[PendingWork] = field(default_factory=list)
    epoch_seconds: dict[tuple[str, int], float] = field(default_factory=dict)
    measured_seconds: float = 0.0  # seconds of the measured epochs whose prior is known
    measured_prior: float = 0.0  # the sum of those epochs' priors (both weighted likewise)
    prior_seconds: bool = False
    capacity: int = 0

    @property
    def finished(self) -> bool:
        return self.pending == 0 and self.running == 0


RECENT_WEIGHT = 0.95  # an epoch's weight in the measured costs decays this much an epoch


class EpochCosts:
    """What the epochs measured so far cost: the ``epoch_seconds``, ``measured_seconds`` and
    ``measured_prior`` of :class:`QueueStats`.

    Recent epochs weigh most: the older ones decay by :data:`RECENT_WEIGHT` an epoch, so a
    change of load shows within tens of epochs.
    """

    def __init__(self) -> None:
        self._totals: dict[tuple[str, int], list[float]] = {}  # (model, cores) -> [s, epochs]
        self._measured = [0.0, 0.0]  # [seconds, priors] of the epochs whose prior is known

    def record(
        self, model: str, cores: int, epochs: int, began: float, ended: float,
        prior: float | None,
    ) -> None:  # fmt: skip
        """``epochs`` of ``model`` on ``cores`` ran from ``began`` to ``ended`` (seconds);
        ``prior``: the cost model's seconds (or cost units) per epoch of them, if known."""
        total = self._totals.setdefault((model, cores), [0.0, 0.0])
        keep = RECENT_WEIGHT**epochs
        total[:] = total[0] * keep + ended - began, total[1] * keep + epochs
        if prior is not None:
            seconds, priors = self._measured
            self._measured[:] = seconds * keep + ended - began, priors * keep + prior * epochs

    def epoch_seconds(self) -> dict[tuple[str, int], float]:
        """The measured seconds per epoch of each ``(model, cores)`` pair."""
        return {k: t / n for k, (t, n) in list(self._totals.items()) if n}

    @property
    def measured_seconds(self) -> float:
        return self._measured[0]

    @property
    def measured_prior(self) -> float:
        return self._measured[1]


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
