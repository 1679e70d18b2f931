"""Files of a run directory, written atomically: temp file + ``os.replace``.

A crash never leaves a half-written file. This module needs neither pyarrow nor torch, so
worker processes can write their checkpoints without loading either.

A run directory is never a way to write elsewhere: its folders are opened with
``O_NOFOLLOW`` and written through their descriptors, its files are created, read and
removed without following a symlink, and :func:`check_no_links` refuses, in one line, a run
directory that holds one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

from raynn.errors import OutputError

_NO_LINK = os.O_NOFOLLOW | os.O_CLOEXEC
_ABSENT = (errno.ENOENT, errno.ENAMETOOLONG)  # a name too long to exist names no file
_FIX = "raynn does not follow links in a run directory"


def _target(link: Path) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return "?"


def link_error(run_dir: str | os.PathLike[str], link: str | os.PathLike[str]) -> OutputError:
    """The one-line refusal of symlink ``link`` in (or as) run directory ``run_dir``."""
    run_dir, link = Path(run_dir), Path(link)
    if link == run_dir:
        return OutputError(
            f"run directory {run_dir} is a symlink to {_target(link)}; {_FIX}: pass the real "
            f"folder ({os.path.realpath(run_dir)})"
        )
    return OutputError(
        f"run directory {run_dir} has a symlink {link.relative_to(run_dir)} -> "
        f"{_target(link)}; {_FIX}: replace it with a real file or folder"
    )


def _entries(folder: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def check_no_links(run_dir: str | os.PathLike[str]) -> None:
    """Refuse (OutputError, one line) a run directory that is a symlink or has one among its
    files, its sub-folders or their files: raynn reads and writes none of them."""
    run_dir = Path(run_dir)
    if run_dir.is_symlink():
        raise link_error(run_dir, run_dir)
    for entry in _entries(run_dir):
        if entry.is_symlink():
            raise link_error(run_dir, entry.path)
        if entry.is_dir(follow_symlinks=False):
            for inner in _entries(entry.path):
                if inner.is_symlink():
                    raise link_error(run_dir, inner.path)


def open_folder(folder: str | os.PathLike[str], follow_links: bool = False) -> int:
    """A descriptor of ``folder`` (made if missing) to write into; OutputError if it is a
    symlink (unless ``follow_links``: a folder the user named, outside any run directory)."""
    folder = Path(folder)
    flags = os.O_RDONLY | os.O_DIRECTORY | (os.O_CLOEXEC if follow_links else _NO_LINK)
    for _ in range(2):
        try:
            return os.open(folder, flags)
        except FileNotFoundError:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            if not follow_links and folder.is_symlink():
                raise OutputError(
                    f"{folder} is a symlink to {_target(folder)}; {_FIX}: replace it with a "
                    "real folder"
                ) from None
            raise
    return os.open(folder, flags)


def _write_temp(dfd: int, name: str, write: Callable[[IO[bytes]], Any]) -> str:
    """Write a new temporary sibling of ``name`` in folder ``dfd``, fsync'ed; its name."""
    while True:
        tmp = f".{name[:100]}.{secrets.token_hex(4)}.tmp"
        try:  # never through a link; the mode is what open() gives a new file (the umask)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_LINK, 0o666, dir_fd=dfd)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise
    return tmp


def atomic_write(
    path: Path, write: Callable[[IO[bytes]], Any], *, follow_links: bool = False
) -> None:
    """Write a file via a temporary sibling and ``os.replace``, durably: the file and then its
    directory are fsync'ed, so after a crash the name holds the old content or the new, whole.
    The file gets the mode the umask gives any new file. Its folder is opened without
    following a symlink (unless ``follow_links``, for a folder the user named outside any
    run directory) and a symlink at ``path`` is replaced, never followed. OSError ->
    OutputError."""
    path = Path(path)
    try:
        dfd = open_folder(path.parent, follow_links)
        try:
            tmp = _write_temp(dfd, path.name, write)
            try:
                os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                with suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                raise
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise write_error(path, exc) from None


def create_unbuffered(path: Path) -> IO[bytes]:
    """A new file at ``path``, opened for writing without a buffer (each write reaches the
    kernel at once, safe from a kill of this process), never through a link; its folder is
    fsync'ed so that the name survives a power loss. OSError if it exists."""
    folder = open_folder(path.parent)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_LINK
        fd = os.open(path.name, flags, 0o666, dir_fd=folder)
        os.fsync(folder)
    finally:
        os.close(folder)
    return os.fdopen(fd, "wb", buffering=0)


def write_error(path: Path, exc: OSError) -> OutputError:
    """The one line for a file of a run directory that could not be written."""
    return OutputError(
        f"cannot write {path}: {exc.strerror or exc}; free space or fix permissions, then "
        f"continue with 'raynn run --resume {path.parent.parent}'"
    )


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of ``path``, never read through a symlink (OSError ``ELOOP`` if it is one)."""
    fd = os.open(path, os.O_RDONLY | _NO_LINK)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def remove_file(path: str | os.PathLike[str]) -> None:
    """Remove ``path`` if it is there (a symlink itself, never its target); a name too long
    to exist is not there."""
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno not in _ABSENT:
            raise


def _temp_names(dfd: int) -> Iterator[str]:
    with os.scandir(dfd) as it:
        for entry in it:
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                if not entry.is_dir(follow_symlinks=False):
                    yield entry.name


def sweep_temp_files(run_dir: str | os.PathLike[str]) -> int:
    """Remove the temporary files a killed writer left in a run directory and its
    sub-folders (its driver holds the run's lock, so no live writer owns one); returns how
    many. No symlink is followed: a linked folder is not entered, a link is not a file."""
    removed = 0
    try:
        top = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | _NO_LINK)
    except OSError:
        return 0
    try:
        folders = [top]
        with os.scandir(top) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    with suppress(OSError):
                        flags = os.O_RDONLY | os.O_DIRECTORY | _NO_LINK
                        folders.append(os.open(entry.name, flags, dir_fd=top))
        for dfd in folders:
            for name in list(_temp_names(dfd)):
                with suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dfd)
                    removed += 1
    finally:
        for dfd in folders:
            os.close(dfd)
    return removed


def write_bytes(path: Path, data: bytes, *, follow_links: bool = False) -> None:
    """Write ``data`` to ``path``, atomically (``follow_links``: see :func:`atomic_write`)."""
    atomic_write(path, lambda fh: fh.write(data), follow_links=follow_links)


def write_json(path: Path, obj: Any, *, follow_links: bool = False) -> None:
    """Write ``obj`` as indented JSON, atomically (``follow_links``: see :func:`atomic_write`)."""
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
    atomic_write(path, lambda fh: fh.write(data), follow_links=follow_links)


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


def _taken(name: str, dfd: int) -> bool:
    try:
        os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def set_aside_file(path: Path) -> Path | None:
    """Move ``<run_dir>/<folder>/<name>``, found damaged, to ``<run_dir>/damaged/<folder>-<name>``
    (``.1``, ``.2``... when that name is taken), never following a symlink; its new path, None
    if it is not there. OSError -> OutputError."""
    damaged, stem = path.parent.parent / "damaged", f"{path.parent.name}-{path.name}"[:200]
    try:
        dfd = open_folder(damaged)
        try:
            name, n = stem, 0
            while _taken(name, dfd):
                n += 1
                name = f"{stem}.{n}"
            os.replace(path, name, dst_dir_fd=dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        if exc.errno in _ABSENT:
            return None
        raise OutputError(
            f"cannot move the damaged {path} aside: {exc.strerror or exc}; delete it by hand"
        ) from None
    return damaged / name


class CheckpointDir:
    """Job checkpoints as files: ``<run_dir>/checkpoints/<job_id>.ckpt``."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.root = Path(run_dir) / "checkpoints"

    def path(self, job_id: str) -> Path:
        return self.root / f"{file_stem(job_id)}.ckpt"

    def _legacy(self, job_id: str) -> Path:  # schema 2's name: unbounded, may be too long
        return self.root / f"{safe_name(job_id)}.ckpt"

    def save_checkpoint(self, job_id: str, blob: bytes) -> None:
        """Store a job's latest checkpoint bytes."""
        write_bytes(self.path(job_id), blob)

    def load_checkpoint(self, job_id: str) -> bytes | None:
        """The job's latest checkpoint bytes, or None."""
        for path in (self.path(job_id), self._legacy(job_id)):
            try:
                return read_bytes(path)
            except OSError as exc:
                if exc.errno not in _ABSENT:
                    raise
        return None

    def set_aside(self, job_id: str) -> str | None:
        """Move the job's checkpoint, which cannot be loaded, under ``damaged/``; its new path
        (None: it has none)."""
        for path in (self.path(job_id), self._legacy(job_id)):
            if (moved := set_aside_file(path)) is not None:
                return str(moved)
        return None

    def drop(self, job_id: str) -> None:
        """Remove the job's checkpoint (it finished)."""
        remove_file(self.path(job_id))
        remove_file(self._legacy(job_id))
