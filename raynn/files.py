"""Files of a run directory, written atomically: temp file + ``os.replace``.

A crash never leaves a half-written file. This module needs neither pyarrow nor torch, so
worker processes can write their checkpoints without loading either.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from raynn.errors import OutputError


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write a file via a temporary sibling and ``os.replace``; OSError -> OutputError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise OutputError(
            f"cannot write {path}: {exc.strerror or exc}; free space or fix permissions, then "
            f"continue with 'raynn run --resume {path.parent.parent}'"
        ) from None


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, atomically."""
    atomic_write(path, lambda fh: fh.write(data))


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
    atomic_write(path, lambda fh: fh.write(data))


def safe_name(name: str) -> str:
    """``name`` with every character but letters, digits and ``-_.`` replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class CheckpointDir:
    """Job checkpoints as files: ``<run_dir>/checkpoints/<job_id>.ckpt``."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.root = Path(run_dir) / "checkpoints"

    def path(self, job_id: str) -> Path:
        return self.root / f"{safe_name(job_id)}.ckpt"

    def save_checkpoint(self, job_id: str, blob: bytes) -> None:
        """Store a job's latest checkpoint bytes."""
        write_bytes(self.path(job_id), blob)

    def load_checkpoint(self, job_id: str) -> bytes | None:
        """The job's latest checkpoint bytes, or None."""
        try:
            return self.path(job_id).read_bytes()
        except FileNotFoundError:
            return None

    def drop(self, job_id: str) -> None:
        """Remove the job's checkpoint (it finished)."""
        self.path(job_id).unlink(missing_ok=True)
