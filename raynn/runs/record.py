"""A run directory's bookkeeping, shared by every kind of run: ``run.json`` and its attempts.

``run.json`` holds the spec, the versions, the driver and one entry per attempt (an
invocation of ``raynn run``, or of ``--resume``) with its executor, start, end, wall seconds
and status. :class:`RunRecord` creates or reopens it, holds the run directory's
:class:`~raynn.runs.results.RunLock` while a driver works in it, and records each attempt: a
``KeyboardInterrupt`` or SIGTERM leaves ``interrupted``, any other error ``failed`` with the
error. run.json keeps the SHA-256 of its spec (``spec_sha256``): a resume refuses a run.json
whose spec was edited by hand, and a spec given beside ``--resume`` that is not the run's own.
"""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raynn._version import __version__
from raynn.errors import OutputError, RaynnError, SpecError
from raynn.runs.files import check_no_links, read_bytes
from raynn.runs.results import SCHEMA_VERSION, RunLock, create_run_dir, write_json
from raynn.runs.signals import name_run_dir, sigterm_as_interrupt, terminated

# run.json keeps its spec's digest since this schema version: removing it is an edit too
DIGEST_SINCE = 5

# keys a spec given beside --resume may change: the run directory is already chosen
RESUME_FREE_KEYS = ("output.dir",)


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
        plain = json.loads(json.dumps(spec.to_dict(), default=str))  # as run.json reads back
        meta = {
            "schema_version": SCHEMA_VERSION,
            "spec": plain,
            "spec_sha256": spec_digest(plain),
            "argv": sys.argv,
            "versions": versions(),
            "driver": socket.gethostname(),
            **fields,
            "runs": [],
        }
        return cls(run_dir, meta)

    @classmethod
    def open(cls, run_dir: str | Path) -> RunRecord:
        """The record of an existing run directory (to resume); RaynnError if it has none,
        OutputError if it holds a symlink (:func:`~raynn.runs.files.check_no_links`)."""
        run_dir = Path(run_dir)
        check_no_links(run_dir)
        try:
            meta = json.loads(read_bytes(run_dir / "run.json"))
        except (OSError, ValueError) as exc:
            raise RaynnError(
                f"cannot resume {run_dir}: no readable run.json ({exc}); pass a "
                "run directory made by 'raynn run'"
            ) from None
        digest = meta.get("spec_sha256") if isinstance(meta, dict) else None
        if digest is None and _version(meta) < DIGEST_SINCE:  # before run.json kept one
            return cls(run_dir, meta)
        if spec_digest(meta.get("spec")) != digest:
            raise SpecError(
                f"{run_dir / 'run.json'} was edited by hand: its spec no longer matches its "
                "digest; restore it or start a new run"
            )
        return cls(run_dir, meta)

    def resume_spec(self, given: Any = None) -> Any:
        """The run's own spec, rebuilt from run.json; ``given`` (a spec passed beside
        ``--resume``) must be the same, but for :data:`RESUME_FREE_KEYS`.

        Raises:
            SpecError: ``given`` differs, naming the dotted keys that do.
        """
        from raynn.spec import spec_from_dict

        spec = spec_from_dict(self.meta["spec"])
        if given is None:
            return spec
        ours, theirs = (json.loads(json.dumps(s.to_dict(), default=str)) for s in (spec, given))
        keys = [k for k in changed_keys(ours, theirs) if k not in RESUME_FREE_KEYS]
        if keys:
            shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
            raise SpecError(
                f"cannot resume {self.run_dir} with this spec: it differs from the run's own "
                f"(run.json) at {shown}; resume without the spec to finish the run as it "
                "began, or run this spec as a new run"
            )
        return spec

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
    def attempt(
        self, executor: str, start: float | None = None, **fields: Any
    ) -> Iterator[dict[str, Any]]:
        """Record one attempt: appended (``status: running``) and saved on entry; on exit its
        end and wall seconds since ``start`` (``time.time()`` when the attempt began, its
        planning included; default: now), ``interrupted`` on Ctrl-C or SIGTERM (saved at
        once on SIGTERM, with ``signal``), ``failed`` with the error on any other exception,
        saved again (a full disk then keeps the original error).

        Yields:
            The attempt's dict, for the caller to fill in (``status`` once it knows).
        """
        attempt: dict[str, Any] = {"executor": executor, **fields}
        attempt["start"] = time.time() if start is None else start
        attempt["status"] = "running"
        self.attempts.append(attempt)
        self.save()

        def on_sigterm() -> None:  # on disk at once: the cleanup may hang or be SIGKILLed
            attempt.update(status="interrupted", signal="SIGTERM", end=time.time())
            attempt["wall_seconds"] = attempt["end"] - attempt["start"]
            self.save()

        try:
            with sigterm_as_interrupt(on_sigterm):  # SIGTERM (ray job stop, Slurm) as Ctrl-C
                yield attempt
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt) or terminated(exc):  # or what SIGTERM
                attempt["status"] = "interrupted"  # set off (Ray's errors, its cluster gone)
                attempt.update({"signal": "SIGTERM"} if terminated(exc) else {})
                name_run_dir(exc, self.run_dir)
            else:
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


def _version(meta: Any) -> int:
    """run.json's ``schema_version`` (0 where it has none or it is no number)."""
    version = meta.get("schema_version") if isinstance(meta, dict) else None
    return version if isinstance(version, int) else 0


def spec_digest(spec: Any) -> str:
    """SHA-256 (hex) of ``spec`` (run.json's plain spec) as canonical JSON: sorted keys, no
    spaces."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def changed_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys at which two plain specs (or parts of them) differ, sorted:
    ``optimizer.lr``, ``models[1].args.hidden``; a list of another length is one key."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            out += changed_keys(a[k], b[k], key) if k in a and k in b else [key]
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = enumerate(zip(a, b, strict=True))
        return [k for i, (x, y) in pairs for k in changed_keys(x, y, f"{prefix}[{i}]")]
    return [] if a == b else [prefix or "the whole spec"]
