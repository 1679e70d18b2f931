"""SIGTERM ends a run as Ctrl-C does.

``ray job stop``, Slurm and Kubernetes stop a driver with SIGTERM, whose default action kills
the process at once: its attempt in run.json would say ``running`` for ever. While
:func:`sigterm_as_interrupt` is active, SIGTERM raises :class:`Terminated` (a
``KeyboardInterrupt``) in the main thread instead, so the same cleanup runs as for Ctrl-C
and the attempt ends ``interrupted`` (written at once, before that cleanup).
:func:`name_run_dir` tells the CLI's message which run directory to resume.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM  # 143: what a shell reports for a SIGTERM'd process


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: every ``except KeyboardInterrupt`` sees it."""


class _Received:
    """Whether SIGTERM arrived since the last :func:`sigterm_as_interrupt` began."""

    sigterm = False


def terminated(exc: BaseException) -> bool:
    """Whether the ``KeyboardInterrupt`` ``exc`` stands for SIGTERM: a :class:`Terminated`, or
    the plain ``KeyboardInterrupt`` that Ray's blocking calls raise in place of whatever a
    signal handler raised while they waited."""
    return isinstance(exc, Terminated) or _Received.sigterm


@contextmanager
def sigterm_as_interrupt(first: Callable[[], None] | None = None) -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread; the handler
    before comes back on exit. In any other thread (Python delivers signals to the main
    thread only) nothing changes.

    ``first`` runs in the handler, before the raise: what must be on disk even if the
    cleanup that follows never ends (a Ray call whose cluster the same signal stopped) or
    is cut short (``ray job stop`` sends SIGKILL 3 s after SIGTERM).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        _Received.sigterm = True
        if first is not None:
            try:
                first()
            except Exception:  # noqa: BLE001 - the interrupt itself matters more
                pass
        raise Terminated("SIGTERM")

    _Received.sigterm = False
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:  # None: a handler installed outside Python; the default is the closest
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def name_run_dir(exc: BaseException, run_dir: Path | None) -> None:
    """Record on ``exc`` (``exc.run_dir``) the run directory an interrupted run can resume,
    once its run.json exists; the CLI's interrupt message names it."""
    if run_dir is not None and (Path(run_dir) / "run.json").is_file():
        exc.run_dir = Path(run_dir)  # type: ignore[attr-defined]
