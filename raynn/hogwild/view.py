"""The live progress view of a HOGWILD run: samples trained instead of jobs done."""

from __future__ import annotations

import time
from typing import Any

from raynn.placement.progress import Progress, QueueStats, fmt_seconds
from raynn.spec.hogwild import HogwildSpec


class HogwildView(Progress):
    """The live progress view, counting samples instead of jobs.

    The K-fold view draws :class:`~raynn.placement.progress.QueueStats`; here its ``total`` and
    ``done`` count samples (epochs times training samples), ``running`` the workers.
    """

    def __init__(self, spec: HogwildSpec, n_train: int, enabled: bool) -> None:
        super().__init__(spec.name, spec.training.epochs, enabled=enabled)
        self.total = spec.training.epochs * n_train
        self.n_train = n_train
        self.workers = 0
        self.last: dict[str, Any] = {}
        self.started = time.time()

    def _stats(self, running: int) -> QueueStats:
        return QueueStats(
            total=self.total,
            pending=0,
            running=running,
            done=min(int(self.last.get("samples", 0)), self.total),
            failed=0,
            elapsed=time.time() - self.started,
        )

    def show(self, row: dict[str, Any] | None = None) -> None:
        """Redraw, with ``row`` (an eval row) as the latest evaluation if given."""
        if row is not None:
            self.last = row
        self.update(self._stats(self.workers))

    def line(self, stats: QueueStats) -> str:
        """The view's one line: workers, elapsed, epoch, version, last test accuracy."""
        acc = self.last.get("accuracy")
        return (
            f"[{self.title}] hogwild, {self.workers} worker(s), elapsed "
            f"{fmt_seconds(stats.elapsed)}: epoch {stats.done / max(self.n_train, 1):.1f}/"
            f"{self.epochs_per_job}, version {self.last.get('version', 0)}, test accuracy "
            f"{'-' if acc is None else f'{acc:.4f}'}"
        )

    def finish(self) -> None:
        """Draw the last line and close the view."""
        if self.enabled:
            self.close(self._stats(0))
        else:
            self.close()
