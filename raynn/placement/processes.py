"""Worker processes forked from a zygote, and the pipe they talk to the driver over.

A worker process that imports torch itself costs about 1.6 s of CPU before it trains (Ray's
worker processes, a joblib/loky pool and spawned processes all pay it). A process forked
from one that has torch and the dataset loaded starts in milliseconds and shares the
dataset's pages. The driver cannot be that process: GNU OpenMP does not survive a fork once
its thread pool has run (a child forked from a process that ran a multi-threaded torch op
hangs in its first parallel region; measured here), and the driver runs such ops (the model
probe) or may have, when raynn is called from an application.

So the workers are forked from a *zygote*: a fresh interpreter, started at once (its import
of torch runs while the driver imports and loads the data, on a core that is idle then),
that receives the dataset over its pipe, never runs a torch op itself and only ever forks.
The zygote and every worker die with the process that made them (``PR_SET_PDEATHSIG``), and
a worker also stops when its pipe to the driver closes.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from raynn.errors import RaynnError

_PR_SET_PDEATHSIG = 1
_POOL_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# what the local executor's workers need, imported once by the zygote
ZYGOTE_PRELOAD = ("torch", "torch._dynamo", "raynn.kfold.executors.local")
_BOOT = "from raynn.placement.processes import _zygote_main; _zygote_main()"


def die_with_parent() -> None:
    """Ask the kernel to kill this process when the thread that started it exits."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux/glibc: the closed pipe still stops it
        pass


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 22))
        if not chunk:
            raise EOFError("zygote pipe closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _zygote_main() -> None:  # pragma: no cover - runs in the zygote process
    """The zygote: preload modules (and tell the driver whether they imported), receive the
    payload, fork one worker per request.

    A request is ``(target, args)`` plus the worker's end of a fresh socket pair; the worker
    runs ``target(conn, payload, *args)`` and exits; the zygote answers with its pid.
    """
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    sock = socket.socket(fileno=int(sys.argv[1]))
    failed = b""
    for module in sys.argv[2:]:
        try:
            importlib.import_module(module)
        except BaseException as exc:  # noqa: BLE001 - told to the driver, which says it
            failed = f"cannot import {module} ({type(exc).__name__}: {exc})".encode()
            break
    sock.sendall(len(failed).to_bytes(8, "little") + failed)  # 0: ready
    if failed:
        return
    try:
        size = int.from_bytes(_recv_exact(sock, 8), "little")
        payload = pickle.loads(_recv_exact(sock, size))
    except EOFError:
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1)
        except OSError:
            return
        if not msg or not fds:
            return
        target, args = pickle.loads(msg)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                sock.close()
                die_with_parent()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _resolve(target)(Connection(fds[0]), payload, *args)
                code = 0
            finally:
                os._exit(code)
        os.close(fds[0])
        sock.sendall(pid.to_bytes(8, "little"))


class Zygote:
    """A clean process that forks worker processes on request; see the module docstring.

    Args:
        preload: modules the zygote imports before anything else (what workers need).
    """

    def __init__(self, preload: Sequence[str] = ("torch",)) -> None:
        self._lock = threading.Lock()
        parent, child = socket.socketpair()
        # the driver's own sys.path, not `python -c`'s current folder first: a folder named
        # raynn (a clone's) where the command runs must not replace the raynn the driver runs
        path = [p for p in sys.path if isinstance(p, str)]
        boot = f"import sys; sys.path[:] = {path!r}; {_BOOT}"
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                boot,
                str(child.fileno()),
                *preload,
            ],
            pass_fds=(child.fileno(),),
            # no thread pools in the zygote (numpy's OpenBLAS starts one at import): a fork
            # copies only the forking thread; each worker sizes its own pools when pinned
            env={**os.environ, **{v: "1" for v in _POOL_VARIABLES}},
        )
        child.close()
        self.pid = self._proc.pid
        self._sock = parent
        self._loaded = False

    def load(self, payload: Any) -> None:
        """Send what every worker receives (once; the dataset)."""
        blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self._sock.sendall(len(blob).to_bytes(8, "little") + blob)
        except OSError:
            pass  # the zygote is gone: what it said before it went tells why
        self._ready()
        self._loaded = True

    def _ready(self) -> None:
        """Read the zygote's word that it imported its preload; raise what it said if not."""
        try:
            size = int.from_bytes(_recv_exact(self._sock, 8), "little")
            failed = _recv_exact(self._sock, size).decode(errors="replace")
            fix = "install it for this Python"
        except (OSError, EOFError):
            try:
                code = self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                code = None
            failed, fix = f"exited (code {code}) before it was ready", "see its error above"
        if failed:
            raise RaynnError(
                f"worker processes cannot start: their zygote ({sys.executable}) {failed}; "
                f"{fix}, or run with --serial"
            )

    def fork(self, target: str, *args: Any) -> tuple[int, Connection]:
        """Start ``target(conn, payload, *args)`` (``"module:function"``) in a new process.

        Returns its pid and the driver's end of its pipe.
        """
        if not self._loaded:
            raise RuntimeError("Zygote.load(payload) first")
        mine, theirs = socket.socketpair()
        try:
            with self._lock:
                socket.send_fds(self._sock, [pickle.dumps((target, args))], [theirs.fileno()])
                pid = int.from_bytes(_recv_exact(self._sock, 8), "little")
        except (OSError, EOFError) as exc:
            raise RaynnError(f"the worker zygote is gone ({exc}); run again") from None
        finally:
            theirs.close()
        conn = Connection(os.dup(mine.fileno()))
        mine.close()
        return pid, conn

    def close(self) -> None:
        """Stop the zygote (its workers die with it). Safe to call twice."""
        self._sock.close()
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def send(conn: Connection, obj: Any) -> None:
    """Send ``obj`` with cloudpickle: jobs may carry the user's own model or optimizer
    factories (lambdas, classes of a ``__main__`` script), which plain pickle sends by name."""
    import cloudpickle

    conn.send_bytes(cloudpickle.dumps(obj))


def recv(conn: Connection) -> Any:
    """Receive what :func:`send` sent."""
    return pickle.loads(conn.recv_bytes())


class PipeProxy:
    """Calls on an object that lives in the driver, made from a worker over its pipe.

    ``proxy.method(*args)`` sends ``(target, method, args)`` and returns the driver's reply.
    Thread-safe: calls from several threads (one pipe, one lock) are serialised.
    """

    def __init__(self, conn: Connection, target: str, lock: threading.Lock | None = None) -> None:
        self._conn, self._target = conn, target
        self._lock = lock or threading.Lock()

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)

        def invoke(*args: Any) -> Any:
            with self._lock:
                send(self._conn, (self._target, method, args))
                return recv(self._conn)

        return invoke
