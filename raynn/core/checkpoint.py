"""Epoch checkpoints as self-checking bytes: a magic tag, a SHA-256 of the payload, the payload.

A checkpoint that fails the check, or whose payload ``torch.load(weights_only=True)`` refuses
or cannot read, is reported as :class:`~raynn.errors.CheckpointError`; the training loop then
sets it aside and starts the job from scratch instead of resuming from garbage
(:func:`load_latest`, :func:`set_aside`). :class:`CheckpointWriter` encodes and saves them
in the background while training goes on.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
import threading
from typing import Any, Protocol

import torch

from raynn.errors import CheckpointError

_MAGIC = b"RAYNNCK1"


class CheckpointStore(Protocol):
    """Where a job's latest checkpoint lives (a directory, or the results collector actor).

    A store may also offer ``set_aside(job_id) -> str | None``: move a checkpoint that cannot
    be loaded out of the way and say where (the run directory's ``damaged/``).
    """

    def load_checkpoint(self, job_id: str) -> bytes | None: ...

    def save_checkpoint(self, job_id: str, blob: bytes) -> None: ...


def encode(state: dict[str, Any]) -> bytes:
    """Serialise ``state`` with torch and prefix it with its checksum."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    return _MAGIC + hashlib.sha256(payload).digest() + payload


def decode(blob: bytes) -> dict[str, Any]:
    """Verify and deserialise a checkpoint made by :func:`encode`."""
    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 32:
        raise CheckpointError("checkpoint has no raynn header (truncated or not a checkpoint)")
    digest, payload = blob[len(_MAGIC) : len(_MAGIC) + 32], blob[len(_MAGIC) + 32 :]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError("checkpoint checksum mismatch (file corrupt)")
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as exc:  # torch raises many kinds: unpickling, zip, EOF, runtime
        raise CheckpointError(f"checkpoint payload cannot be read: {reason(exc)}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint payload is a {type(state).__name__}, not a state dict")
    return state


_REFUSED = "WeightsUnpickler error:"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def reason(exc: BaseException, limit: int = 200) -> str:
    """``exc`` as one short line: its type and message, whitespace collapsed, at most
    ``limit`` characters. Of torch's long ``weights_only`` refusal only the refused part is
    kept (e.g. ``Unsupported global: GLOBAL mod.Cls ...``)."""
    text = _ANSI.sub("", str(exc))
    if _REFUSED in text:
        refused = text.split(_REFUSED, 1)[1].strip().split("\n\n", 1)[0]
        text = "refused by torch.load(weights_only=True): " + refused.split(". ", 1)[0]
    line = f"{type(exc).__name__}: {' '.join(text.split())}".rstrip(": ")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def load_latest(store: CheckpointStore | None, job_id: str) -> dict[str, Any] | None:
    """The job's latest checkpoint, decoded; None without one, or when it belongs to another
    job. One that cannot be decoded is set aside (:func:`set_aside`): train afresh."""
    if store is None:
        return None
    blob = store.load_checkpoint(job_id)
    if blob is None:
        return None
    try:
        state = decode(blob)
    except CheckpointError as exc:  # start from scratch rather than resume from garbage
        set_aside(store, job_id, str(exc))
        return None
    return state if state.get("job_id") == job_id else None  # another job's (schema 2)


def set_aside(store: CheckpointStore, job_id: str, why: str) -> None:
    """Move the job's checkpoint that cannot be loaded out of the way and say so in one line."""
    move = getattr(store, "set_aside", None)
    where = move(job_id) if move is not None else None
    fate = f"set aside as {where}" if where else "ignored"
    print(
        f"raynn: the checkpoint of job {job_id} cannot be loaded ({why}); {fate}, training afresh",
        file=sys.stderr,
        flush=True,
    )


class CheckpointWriter:
    """Encodes and saves a job's checkpoints in a background thread, one at a time.

    The state is copied on the training thread (a memory copy); ``torch.save``, the checksum
    and the store's write happen in the background while the next epoch trains. A new
    checkpoint waits for the one before it. :meth:`close` waits for the last one, so that no
    checkpoint lands after the job's result.
    """

    def __init__(self, store: CheckpointStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, state: dict[str, Any]) -> None:
        """Save ``state`` in the background (after the checkpoint before it)."""
        self.close()
        self._thread = threading.Thread(
            target=self._save, args=(state,), name="raynn-checkpoint", daemon=True
        )
        self._thread.start()

    def _save(self, state: dict[str, Any]) -> None:
        try:
            self.store.save_checkpoint(self.job_id, encode(state))
        except BaseException as exc:  # raised again on the training thread by close()
            self._error = exc

    def close(self) -> None:
        """Wait for the checkpoint being saved; raise what saving it raised."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
