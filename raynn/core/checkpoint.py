"""Epoch checkpoints as self-checking bytes: a magic tag, a SHA-256 of the payload, the payload.

A checkpoint that fails the check, or whose payload ``torch.load(weights_only=True)`` refuses
or cannot read, is reported as :class:`~raynn.errors.CheckpointError`; the training loop then
sets it aside and starts the job from scratch instead of resuming from garbage.
"""

from __future__ import annotations

import hashlib
import io
import re
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
