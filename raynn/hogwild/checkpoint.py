"""The parameter server's checkpoints: the codec (numpy only, so the server never imports
torch) and :class:`Checkpointer`, a shard's checkpoint file (where, how often, loading it back).

A checkpoint is ``RAYNNPS1`` + the SHA-256 of the payload + an ``.npz`` payload holding the
weights (float32) and a JSON header (the server's shard, version, counts, last seqs, staleness).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from raynn.errors import CheckpointError, OutputError
from raynn.runs.files import read_bytes, set_aside_file
from raynn.runs.results import write_bytes

_MAGIC = b"RAYNNPS1"
# what a restoring server reads from the header, and its JSON type
_META = {
    "lo": int,
    "version": int,
    "steps": int,
    "samples": int,
    "pushes": int,
    "bases": dict,
    "active": list,
    "last_seq": dict,
    "staleness": dict,
}


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
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            weights, meta = npz["weights"].copy(), json.loads(npz["meta"].tobytes().decode())
    except Exception as exc:  # zip, .npy, JSON and missing-entry errors alike
        why = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise CheckpointError(f"server checkpoint payload cannot be read: {why}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError("server checkpoint header is not a JSON object")
    garbled = [k for k, t in _META.items() if not isinstance(meta.get(k), t)]
    if garbled:
        raise CheckpointError(f"server checkpoint header lacks or garbles {', '.join(garbled)}")
    return weights, meta


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Read and verify a server checkpoint file."""
    return decode_checkpoint(read_bytes(path))  # never through a symlink


def set_aside_checkpoint(path: Path, why: str) -> str | None:
    """Move a server checkpoint that cannot be loaded to the run directory's ``damaged/`` and
    say so in one line on stderr; its new path (None: it could not be moved, and the next
    checkpoint replaces it)."""
    try:
        moved = set_aside_file(path)
        where, fate = (str(moved), f"set aside as {moved}") if moved else (None, "gone")
    except OutputError as exc:
        where, fate = None, f"left in place ({exc})"
    print(
        f"raynn: server checkpoint {path} cannot be loaded ({why}); {fate}, training afresh",
        file=sys.stderr,
        flush=True,
    )
    return where


class Checkpointer:
    """A server shard's checkpoint file: saved on request or when due, loaded back at start.

    Args:
        path: the file (None: never saved, never loaded).
        seconds: minimum seconds between automatic saves (0: none, only on request).
    """

    def __init__(self, path: str | os.PathLike[str] | None, seconds: float) -> None:
        self.path = Path(path) if path else None
        self.seconds = seconds
        self.count = 0  # saves so far
        self.load_error: str | None = None  # why the file found at start could not be loaded
        self._last = time.monotonic()

    def load(self, size: int, lo: int) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The saved weights (float32) and header of a shard of ``size`` values at ``lo``;
        None without a file, or when it cannot be loaded: it is then set aside
        (:func:`set_aside_checkpoint`) and :attr:`load_error` says why."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            weights, meta = read_checkpoint(self.path)
            weights = weights.astype(np.float32).reshape(-1)
            if weights.size != size or meta["lo"] != lo:
                raise CheckpointError(
                    f"checkpoint holds {weights.size} values at {meta['lo']}, this shard "
                    f"{size} at {lo}"
                )
        except (OSError, ValueError, KeyError, CheckpointError) as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            set_aside_checkpoint(self.path, self.load_error)
            return None  # start from the initial weights rather than from garbage
        return weights, meta

    def save(self, weights: np.ndarray, meta: dict[str, Any]) -> bool:
        """Write ``weights`` and ``meta`` atomically now; False without a path."""
        if self.path is None:
            return False
        write_bytes(self.path, encode_checkpoint(weights, meta))
        self.count += 1
        self._last = time.monotonic()
        return True

    def due(self) -> bool:
        """Whether an automatic save is due (``seconds`` > 0 and that long since the last)."""
        return self.seconds > 0 and time.monotonic() - self._last >= self.seconds
