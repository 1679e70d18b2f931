"""A run directory's bookkeeping, shared by every kind of run: ``run.json`` and its attempts.

``run.json`` holds the spec, the versions, the driver and one entry per attempt (an
invocation of ``raynn run``, or of ``--resume``) with its executor, start, end, wall seconds
and status. :class:`RunRecord` creates or reopens it, holds the run directory's
:class:`~raynn.runs.results.RunLock` while a driver works in it, and records each attempt: a
``KeyboardInterrupt`` leaves ``interrupted``, any other error ``failed`` with the error.
"""

from __future__ import annotations

import json
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raynn._version import __version__
from raynn.errors import OutputError, RaynnError
from raynn.runs.results import SCHEMA_VERSION, RunLock, create_run_dir, write_json


def versions() -> dict[str, str]:
    """Versions for run.json, read from package metadata (importing Ray costs 0.4 s)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"raynn": __version__, "python": platform.python_version()}
    for package in ("torch", "numpy", "ray"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:  # pragma: no cover - all three are dependencies
            pass
    return out


def check_writable(root: Path) -> None:
    """Refuse an output folder that cannot take a run directory, by trying: a temporary file
    in its nearest existing folder (nothing is created). Permissions alone would not tell:
    root may write anywhere, yet a read-only mount or a file in the way refuses even root."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(20, f"{probe} is a file", str(probe))
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise OutputError(
            f"output directory {root} is not writable ({exc.strerror or exc}); choose another "
            "with --output (or output.dir in the spec)"
        ) from None


@dataclass
class RunResult:
    """Where a run's results are, plus its job table (and the spec it ran)."""

    run_dir: Path
    status: str
    jobs: Any  # pandas.DataFrame
    spec: Any = None  # the K-fold spec (K-fold runs)

    @property
    def ok(self) -> bool:
        """Whether the run completed."""
        return self.status == "completed"


class RunRecord:
    """``run.json`` of one run directory, its attempts and its lock.

    Args:
        run_dir: the run directory.
        meta: what ``run.json`` holds (its ``runs`` list: one dict per attempt).
    """

    def __init__(self, run_dir: Path, meta: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.meta = meta
        self._lock = RunLock(self.run_dir)

    @classmethod
    def create(cls, root: Path, spec: Any, **fields: Any) -> RunRecord:
        """A fresh run directory under ``root`` for ``spec`` (its ``run.json`` is written by
        the first attempt); ``fields`` go into ``run.json`` after the driver's name."""
        run_dir = create_run_dir(root, spec.name)
        meta = {
            "schema_version": SCHEMA_VERSION,
            "spec": spec.to_dict(),
            "argv": sys.argv,
            "versions": versions(),
            "driver": socket.gethostname(),
            **fields,
            "runs": [],
        }
        return cls(run_dir, meta)

    @classmethod
    def open(cls, run_dir: str | Path) -> RunRecord:
        """The record of an existing run directory (to resume); RaynnError if it has none."""
        run_dir = Path(run_dir)
        try:
            meta = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError) as exc:
            raise RaynnError(
                f"cannot resume {run_dir}: no readable run.json ({exc}); pass a "
                "run directory made by 'raynn run'"
            ) from None
        return cls(run_dir, meta)

    @property
    def attempts(self) -> list[dict[str, Any]]:
        """One dict per attempt, oldest first."""
        return self.meta["runs"]

    def acquire(self) -> None:
        """Take the run directory's lock (OutputError naming the holder if another has it)."""
        self._lock.acquire()

    def release(self) -> None:
        """Drop the lock, if held."""
        self._lock.release()

    def save(self) -> None:
        """Write ``run.json`` atomically."""
        write_json(self.run_dir / "run.json", self.meta)

    @contextmanager
    def attempt(self, executor: str, **fields: Any) -> Iterator[dict[str, Any]]:
        """Record one attempt: appended (``status: running``) and saved on entry; on exit its
        end and wall seconds, ``interrupted`` on Ctrl-C, ``failed`` with the error on any
        other exception, saved again (a full disk then keeps the original error).

        Yields:
            The attempt's dict, for the caller to fill in (``status`` once it knows).
        """
        attempt: dict[str, Any] = {"executor": executor, **fields}
        attempt["start"] = time.time()
        attempt["status"] = "running"
        self.attempts.append(attempt)
        self.save()
        try:
            yield attempt
        except KeyboardInterrupt:
            attempt["status"] = "interrupted"
            raise
        except BaseException as exc:
            attempt["status"] = "failed"
            attempt["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            attempt["end"] = time.time()
            attempt["wall_seconds"] = attempt["end"] - attempt["start"]
            try:
                self.save()
            except OutputError:
                pass  # the original error (often the same full disk) is the one to report
