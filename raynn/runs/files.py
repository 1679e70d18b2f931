"""Files of a run directory, written atomically: temp file + ``os.replace``.

A crash never leaves a half-written file. This module needs neither pyarrow nor torch, so
worker processes can write their checkpoints without loading either.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from raynn.errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file under this umask


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write a file via a temporary sibling and ``os.replace``, durably: the file and then its
    directory are fsync'ed, so after a crash the name holds the old content or the new, whole.
    The file gets the mode the umask gives any new file. OSError -> OutputError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, _FILE_MODE)  # mkstemp makes it 0600
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
    except OSError as exc:
        raise OutputError(
            f"cannot write {path}: {exc.strerror or exc}; free space or fix permissions, then "
            f"continue with 'raynn run --resume {path.parent.parent}'"
        ) from None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sweep_temp_files(run_dir: str | os.PathLike[str]) -> int:
    """Remove the temporary files a killed writer left in a run directory (its driver holds
    the run's lock, so no live writer owns one); returns how many."""
    removed = 0
    for tmp in Path(run_dir).glob("*/.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


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


def file_stem(key: str) -> str:
    """The file name (without suffix) of ``key``: one that no other key shares and that never
    starts with ``_`` or ``.`` (pyarrow's dataset reader skips such files).

    Its readable part is ``key``'s safe characters (at most 80, leading ``_`` and ``.``
    dropped); 8 hex digits of a hash of the whole ``key`` follow, so ``m 1`` and ``m_1``,
    which read the same, get different files.
    """
    digest = hashlib.blake2b(key.encode(), digest_size=4).hexdigest()
    readable = safe_name(key)[:80].lstrip("._")
    return f"{readable}-{digest}" if readable else digest


class CheckpointDir:
    """Job checkpoints as files: ``<run_dir>/checkpoints/<job_id>.ckpt``."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.root = Path(run_dir) / "checkpoints"

    def path(self, job_id: str) -> Path:
        return self.root / f"{file_stem(job_id)}.ckpt"

    def save_checkpoint(self, job_id: str, blob: bytes) -> None:
        """Store a job's latest checkpoint bytes."""
        write_bytes(self.path(job_id), blob)

    def load_checkpoint(self, job_id: str) -> bytes | None:
        """The job's latest checkpoint bytes, or None."""
        for path in (self.path(job_id), self.root / f"{safe_name(job_id)}.ckpt"):  # schema 2
            try:
                return path.read_bytes()
            except FileNotFoundError:
                continue
        return None

    def drop(self, job_id: str) -> None:
        """Remove the job's checkpoint (it finished)."""
        self.path(job_id).unlink(missing_ok=True)
        (self.root / f"{safe_name(job_id)}.ckpt").unlink(missing_ok=True)
