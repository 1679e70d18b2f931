"""The parameter server's checkpoint codec: numpy only, so the server never imports torch.

A checkpoint is ``RAYNNPS1`` + the SHA-256 of the payload + an ``.npz`` payload holding the
weights (float32) and a JSON header (the server's shard, version, counts, last seqs, staleness).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from raynn.errors import CheckpointError

_MAGIC = b"RAYNNPS1"


def encode_checkpoint(weights: np.ndarray, meta: dict[str, Any]) -> bytes:
    """Self-checking checkpoint bytes: magic, SHA-256 of the payload, an ``.npz`` payload."""
    buf = io.BytesIO()
    header = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    np.savez(buf, weights=np.asarray(weights, dtype=np.float32), meta=header)
    payload = buf.getvalue()
    return _MAGIC + hashlib.sha256(payload).digest() + payload


def decode_checkpoint(blob: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """``(weights, meta)`` from :func:`encode_checkpoint` bytes.

    Raises:
        CheckpointError: not a server checkpoint, truncated or corrupt.
    """
    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 32:
        raise CheckpointError("server checkpoint has no raynn header (truncated or foreign)")
    digest, payload = blob[len(_MAGIC) : len(_MAGIC) + 32], blob[len(_MAGIC) + 32 :]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError("server checkpoint checksum mismatch (file corrupt)")
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        return npz["weights"].copy(), json.loads(npz["meta"].tobytes().decode())


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Read and verify a server checkpoint file."""
    return decode_checkpoint(Path(path).read_bytes())
