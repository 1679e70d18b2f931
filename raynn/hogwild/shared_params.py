"""SharedParams: a model's weights as one flat float32 buffer in POSIX shared memory.

One segment per node, named uniquely for the run (``raynn_hw_<token>_<node>``). The driver
creates it before any worker starts (on its own node directly, elsewhere with a task pinned to
the node: :func:`create_detached`), holding the initial weights; the workers attach to it by
name, so no worker can (re)create a segment after the driver has released it. Each worker
then points its model's parameters (and floating-point buffers, such as BatchNorm running
statistics) at views into the buffer (:meth:`SharedParams.bind`), so an optimizer step by one
worker is a plain in-place write that every other worker on the node sees at once, with no
lock and no message: that is HOGWILD.

Layout of a segment (64-byte aligned)::

    int64 control block   magic, numel, slots, hold, reserved x4, then per worker slot
                          (steps, samples, done, padding x5: one cache line per worker)
    float32 x numel       the weights, in :func:`flat_entries` order

The control block carries what a node's sync role needs from its workers without messages:
each worker writes only its own slot (exact counters, no lock), and the sync role sets
``hold`` to pause the node while a stale-synchronous push waits.

Cleanup: :func:`unlink_segment` removes a segment by name from any process on the node; the
driver does that in ``finally`` (success, errors and Ctrl-C). Python < 3.13 registers every
segment a process creates *or attaches* with that process's resource tracker, which unlinks
it when the process exits: attachments and detached creations are unregistered, and only the
driver's own segment stays registered (a last safety net should the driver die).
"""

from __future__ import annotations

import os
import sys
import time
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import numpy as np
import torch
from torch import nn

from raynn.errors import RaynnError

PREFIX = "raynn_hw_"
_MAGIC = 0x52594E4E48573031  # "RYNNHW01"
_HEAD = 8  # int64 slots before the per-worker ones
_PER_SLOT = 8  # steps, samples, done, padding: one 64-byte cache line per worker
_M_MAGIC, _M_NUMEL, _M_SLOTS, _M_HOLD, _M_STOP = 0, 1, 2, 3, 4


def flat_entries(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The tensors that live in the flat buffer: parameters, then floating-point buffers."""
    out = [(f"param:{n}", p) for n, p in model.named_parameters()]
    out += [(f"buffer:{n}", b) for n, b in model.named_buffers() if b.is_floating_point()]
    return out


def param_numel(model: nn.Module) -> int:
    """How many leading entries of the flat vector are trainable parameters."""
    return sum(p.numel() for p in model.parameters())


def flat_numel(model: nn.Module) -> int:
    """Length of the flat vector of ``model`` (parameters + floating-point buffers)."""
    return sum(t.numel() for _, t in flat_entries(model))


def flatten(model: nn.Module) -> np.ndarray:
    """A float32 copy of the model's flat vector."""
    parts = [t.detach().reshape(-1).to(torch.float32) for _, t in flat_entries(model)]
    return torch.cat(parts).numpy().copy() if parts else np.zeros(0, np.float32)


def load_flat(model: nn.Module, flat: np.ndarray) -> None:
    """Copy a flat vector (as made by :func:`flatten`) into the model's tensors."""
    src = torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float32))
    if src.numel() != flat_numel(model):
        raise RaynnError(
            f"weights have {src.numel()} values but the model needs {flat_numel(model)}; "
            "the checkpoint or server belongs to another model"
        )
    offset = 0
    with torch.no_grad():
        for _, t in flat_entries(model):
            n = t.numel()
            t.copy_(src[offset : offset + n].view_as(t))
            offset += n


def _control_len(slots: int) -> int:
    return _HEAD + _PER_SLOT * slots


def _params_offset(slots: int) -> int:
    raw = 8 * _control_len(slots)
    return (raw + 63) // 64 * 64


def _untrack(shm: shared_memory.SharedMemory) -> None:
    """Stop this process's resource tracker from unlinking an attached segment at exit."""
    if sys.version_info < (3, 13):
        try:
            resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - the tracker is best effort
            pass


class SharedParams:
    """A node's shared flat weight buffer plus its control block.

    Use :meth:`create` or :meth:`attach`; never the constructor.
    """

    def __init__(self, shm: shared_memory.SharedMemory, owner: bool) -> None:
        self._shm = shm
        self.owner = owner
        head = np.frombuffer(shm.buf, dtype=np.int64, count=_HEAD)
        slots = int(head[_M_SLOTS])
        self.numel = int(head[_M_NUMEL])
        self.slots = slots
        self.ctrl: np.ndarray = np.frombuffer(shm.buf, dtype=np.int64, count=_control_len(slots))
        offset = _params_offset(slots)
        self.flat: np.ndarray = np.frombuffer(
            shm.buf, dtype=np.float32, count=self.numel, offset=offset
        )
        self.tensor: torch.Tensor = torch.from_numpy(self.flat)
        del head

    # -- lifecycle -------------------------------------------------------------------------
    @staticmethod
    def segment_name(token: str, node_index: int) -> str:
        """The segment name of node ``node_index`` of the run identified by ``token``."""
        return f"{PREFIX}{token}_{node_index}"

    @classmethod
    def create(cls, name: str, initial: np.ndarray, slots: int) -> SharedParams:
        """Create segment ``name`` holding ``initial`` with ``slots`` worker slots.

        Raises:
            FileExistsError: a segment of that name exists already.
        """
        numel = int(initial.size)
        size = _params_offset(slots) + 4 * max(numel, 1)
        shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        ctrl = np.frombuffer(shm.buf, dtype=np.int64, count=_control_len(slots))
        ctrl[:] = 0
        ctrl[_M_NUMEL], ctrl[_M_SLOTS] = numel, slots
        flat = np.frombuffer(shm.buf, dtype=np.float32, count=numel, offset=_params_offset(slots))
        flat[:] = np.asarray(initial, dtype=np.float32).reshape(-1)
        ctrl[_M_MAGIC] = _MAGIC  # last: attachers wait for it
        del ctrl, flat
        return cls(shm, owner=True)

    @classmethod
    def attach(cls, name: str, timeout: float = 60.0) -> SharedParams:
        """Attach to segment ``name``, waiting up to ``timeout`` s for its creator to fill it.

        Raises:
            RaynnError: the segment did not appear (ready) in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                shm = shared_memory.SharedMemory(name=name)
            except (FileNotFoundError, ValueError):  # not created yet / not sized yet
                shm = None
            if shm is not None:
                _untrack(shm)
                if shm.size >= 8 * _HEAD:
                    head = np.frombuffer(shm.buf, dtype=np.int64, count=_HEAD)
                    ready = int(head[_M_MAGIC]) == _MAGIC
                    del head
                    if ready:
                        return cls(shm, owner=False)
                shm.close()
            if time.monotonic() > deadline:
                raise RaynnError(
                    f"shared-memory segment {name} was not ready after {timeout:.0f} s; the "
                    "node's first worker failed to start (see the Ray worker logs)"
                )
            time.sleep(0.01)

    @property
    def name(self) -> str:
        """The segment name (without the leading slash)."""
        return self._shm.name.lstrip("/")

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to do
            pass

    def close(self) -> None:
        """Unmap this process's view (if no tensor still points into it); idempotent."""
        self.ctrl = self.flat = None  # type: ignore[assignment]
        self.tensor = None  # type: ignore[assignment]
        try:
            self._shm.close()
        except BufferError:
            # A model still views the buffer: the mapping lives until those tensors go. Stop
            # SharedMemory.__del__ from retrying (and failing) the close at garbage collection.
            self._shm.close = lambda: None  # type: ignore[method-assign]

    def unlink(self) -> None:
        """Remove the segment's name (memory is freed once every process has unmapped it)."""
        unlink_segment(self.name)

    # -- binding models ----------------------------------------------------------------------
    def bind(self, model: nn.Module) -> nn.Module:
        """Point the model's parameters and float buffers at views into the shared buffer.

        The buffer's values win: the model's own values are dropped. Returns ``model``.
        """
        if flat_numel(model) != self.numel:
            raise RaynnError(
                f"model has {flat_numel(model)} weights but segment {self.name} holds "
                f"{self.numel}; every worker must build the same model"
            )
        offset = 0
        for _, p in model.named_parameters():
            n = p.numel()
            p.data = self.tensor[offset : offset + n].view_as(p)
            offset += n
        for name, b in list(model.named_buffers()):
            if not b.is_floating_point():
                continue
            owner_name, _, attr = name.rpartition(".")
            n = b.numel()
            model.get_submodule(owner_name)._buffers[attr] = self.tensor[
                offset : offset + n
            ].view_as(b)
            offset += n
        return model

    # -- the control block -------------------------------------------------------------------
    def _slot(self, slot: int) -> int:
        if not 0 <= slot < self.slots:
            raise IndexError(f"slot {slot} out of range 0..{self.slots - 1}")
        return _HEAD + _PER_SLOT * slot

    def record(self, slot: int, steps: int, samples: int) -> None:
        """Publish worker ``slot``'s running step and sample counts (its own slot only)."""
        i = self._slot(slot)
        self.ctrl[i], self.ctrl[i + 1] = steps, samples

    def mark_done(self, slot: int) -> None:
        """Worker ``slot`` has finished its last step."""
        self.ctrl[self._slot(slot) + 2] = 1

    def node_steps(self) -> int:
        """Steps taken by every worker of the node so far."""
        return int(self.ctrl[_HEAD::_PER_SLOT].sum())

    def node_samples(self) -> int:
        """Samples processed by every worker of the node so far."""
        return int(self.ctrl[_HEAD + 1 :: _PER_SLOT].sum())

    def all_done(self) -> bool:
        """Whether every worker slot is marked done."""
        return bool(self.ctrl[_HEAD + 2 :: _PER_SLOT].all())

    @property
    def hold(self) -> bool:
        """Whether the node is paused (a stale-synchronous push is waiting)."""
        return bool(self.ctrl[_M_HOLD])

    @hold.setter
    def hold(self, value: bool) -> None:
        self.ctrl[_M_HOLD] = int(bool(value))

    @property
    def stop(self) -> bool:
        """Whether the round is ending: workers leave at their next step, the rest is pushed."""
        return bool(self.ctrl[_M_STOP])

    @stop.setter
    def stop(self, value: bool) -> None:
        self.ctrl[_M_STOP] = int(bool(value))

    def wait_while_held(self, poll: float = 0.0005) -> float:
        """Block while the node is paused and not stopped; returns the seconds waited."""
        if not self.ctrl[_M_HOLD]:
            return 0.0
        t0 = time.perf_counter()
        while self.ctrl[_M_HOLD] and not self.ctrl[_M_STOP]:
            time.sleep(poll)
        return time.perf_counter() - t0

    def snapshot(self) -> np.ndarray:
        """A copy of the current weights (other workers may be writing meanwhile)."""
        return self.flat.copy()

    def info(self) -> dict[str, Any]:
        """Name, size and owner flag, for logs and tests."""
        return {"name": self.name, "numel": self.numel, "slots": self.slots, "pid": os.getpid()}


def create_detached(name: str, initial: np.ndarray, slots: int) -> str:
    """Create segment ``name`` for others to attach to, then let go of it in this process.

    The segment outlives this process (it is not left to this process's resource tracker)
    until :func:`unlink_segment` removes it. Stale segments of killed runs on this node go
    first (:func:`sweep_stale_segments`). Returns the name.
    """
    sweep_stale_segments()
    shared = SharedParams.create(name, initial, slots)
    _untrack(shared._shm)
    shared.close()
    return name


def request_stop(name: str) -> bool:
    """Ask the workers on segment ``name`` (this machine's) to stop; whether it was there."""
    try:
        shared = SharedParams.attach(name, timeout=0)
    except RaynnError:
        return False
    shared.stop = True
    shared.close()
    return True


def unlink_segment(name: str) -> bool:
    """Remove shared-memory segment ``name`` if it exists; returns whether it did."""
    try:
        shm = shared_memory.SharedMemory(name=name)
    except (FileNotFoundError, ValueError):
        return False
    try:
        shm.unlink()  # also unregisters it from this process's resource tracker
    except FileNotFoundError:
        _untrack(shm)
        return False
    finally:
        shm.close()
    return True


def list_segments(prefix: str = PREFIX) -> list[str]:
    """Names of the shared-memory segments on this machine that start with ``prefix``."""
    try:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))
    except OSError:  # no /dev/shm (not Linux): nothing to list
        return []


def _mapped_segments() -> set[str]:
    """Names of /dev/shm segments some process on this machine maps (that we can read)."""
    mapped: set[str] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as fh:
                for line in fh:
                    if "/dev/shm/" in line:
                        mapped.add(line.rsplit("/dev/shm/", 1)[1].split()[0])
        except OSError:  # gone, or another user's process
            continue
    return mapped


def sweep_stale_segments(min_age: float = 60.0, prefix: str = PREFIX) -> list[str]:
    """Remove raynn segments on this machine that no process maps and that are older than
    ``min_age`` seconds (left by a run that was killed); returns their names.

    A live run's segments are mapped by its workers; the seconds between the driver creating
    a segment and its workers attaching are covered by ``min_age``.
    """
    names = list_segments(prefix)
    if not names:
        return []
    mapped = _mapped_segments()
    removed = []
    now = time.time()
    for name in names:
        try:
            age = now - os.stat(f"/dev/shm/{name}").st_mtime
        except OSError:
            continue
        if name not in mapped and age > min_age and unlink_segment(name):
            removed.append(name)
    return removed
