"""Epoch checkpoints as self-checking bytes: a magic tag, a SHA-256 of the payload, the payload.

A checkpoint that fails the check is reported as :class:`~raynn.errors.CheckpointError`; the
training loop then starts the job from scratch instead of resuming from garbage.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, Protocol

import torch

from raynn.errors import CheckpointError

_MAGIC = b"RAYNNCK1"


class CheckpointStore(Protocol):
    """Where a job's latest checkpoint lives (a directory, or the results collector actor)."""

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
    return torch.load(io.BytesIO(payload), weights_only=True)
