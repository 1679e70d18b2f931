"""Watching a run: per-core CPU utilisation sampling and the live progress view."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from raynn.scheduler.queue import QueueStats


class UtilizationSampler:
    """Samples per-core CPU % of this node in a background thread (psutil).

    A plain class: the serial executor uses it in-process, the Ray executor runs one per node
    as a zero-CPU actor.
    """

    def __init__(self, node: str, interval: float = 0.5) -> None:
        self.node = node
        self.interval = interval
        self._rows: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sampling (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        import psutil

        psutil.cpu_percent(percpu=True)  # the first call only primes the counters
        while not self._stop.wait(self.interval):
            now = time.time()
            for core, pct in enumerate(psutil.cpu_percent(percpu=True)):
                self._rows.append({"node": self.node, "time": now, "core": core, "percent": pct})

    def stop(self) -> list[dict[str, Any]]:
        """Stop sampling and return the rows taken."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return list(self._rows)


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


def eta_seconds(stats: QueueStats, epochs_per_job: int) -> float | None:
    """Remaining time from the share of epochs done so far; None until something is done."""
    done_epochs = (stats.done + stats.failed) * epochs_per_job
    done_epochs += sum(epoch for _, epoch, _, _ in stats.running_progress)
    total = stats.total * epochs_per_job
    if done_epochs <= 0 or total <= 0:
        return None
    frac = min(done_epochs / total, 1.0)
    return stats.elapsed * (1 - frac) / frac


class Progress:
    """Jobs done/running/failed and an ETA: a live view on a terminal, plain lines otherwise."""

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
        eta = eta_seconds(stats, self.epochs_per_job)
        return (
            f"[{self.title}] {stats.done + stats.failed}/{stats.total} jobs done, "
            f"{stats.running} running, {stats.pending} pending, {stats.failed} failed, "
            f"elapsed {_fmt_seconds(stats.elapsed)}, "
            f"ETA {_fmt_seconds(eta) if eta is not None else '?'}"
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
        from rich.text import Text

        rows = [Text(text), ProgressBar(total=stats.total, completed=stats.done + stats.failed)]
        for job_id, epoch, epochs, secs in sorted(stats.running_progress)[:16]:
            rows.append(Text(f"  {job_id:<32} epoch {epoch}/{epochs}  {_fmt_seconds(secs)}"))
        return Group(*rows)

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
