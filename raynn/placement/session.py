"""The one way raynn joins Ray: a cluster by address, or an embedded Ray it starts itself.

:func:`connect` joins ``address`` (``auto``, ``ray://...``, ``host:port``; ``RAY_ADDRESS``
when None, as under ``ray job submit``) or, with neither, starts an embedded local Ray on
this process's CPUs; it says whether it started one, and :func:`shutdown_if_started` stops
only a Ray that this process started (:func:`fast_shutdown`, without graceful waits).

An embedded Ray's processes are known by what ``ray.init`` started: the children of this
process that appeared during it and run Ray's own programs (:func:`embedded_processes`).
Only those, and the processes under them (Ray's workers and agents), are ever killed: the
other children of a run (raynn's zygote and the workers it forks, a bench's processes) are
not Ray's and are left alone.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from raynn.errors import RaynnError
from raynn.placement.cores import usable_cpus

# Ray starts its worker processes at nice 15, below its own daemons and every other process,
# so any wakeup on a training core preempts the training at once. raynn's workers own their
# cores: the Ray it starts runs them at the default priority, as plain processes run. (On a
# cluster started with `ray start`, set RAY_worker_niceness=0 there; cluster/ does.)
LOCAL_RAY_SYSTEM_CONFIG: dict[str, Any] = {"worker_niceness": 0}
CONNECT_TIMEOUT_S = 30.0  # a Ray cluster's address that accepts no connection by then: an error
# the embedded Ray's daemons the driver's disconnect talks to: ray.shutdown() stops them itself
DISCONNECT_DAEMONS = ("raylet", "gcs_server")


_embedded: list[Any] = []  # psutil.Process of each process this process's ray.init started


def will_embed(address: str | None = None) -> bool:
    """Whether :func:`connect` would start an embedded Ray (none is up, no cluster named)."""
    import ray

    if ray.is_initialized():
        return False
    return address == "local" or (address is None and not os.environ.get("RAY_ADDRESS"))


def connect(
    address: str | None = None,
    num_cpus: int | None = None,
    *,
    system_config: Mapping[str, Any] | None = None,
) -> bool:
    """Join Ray unless this process already has; returns whether it started an embedded Ray.

    Args:
        address: a Ray cluster address; ``local`` always starts an embedded Ray; None joins
            ``RAY_ADDRESS`` if set, else starts an embedded Ray.
        num_cpus: CPUs of an embedded Ray (default: this process's affinity).
        system_config: an embedded Ray's ``_system_config`` (default:
            :data:`LOCAL_RAY_SYSTEM_CONFIG`; ``{}`` for Ray's own, workers at nice 15).

    Returns:
        True when this call started Ray (pair it with :func:`shutdown_if_started`); False
        when Ray was already up here.

    Raises:
        RaynnError: Ray cannot be reached or started.
    """
    import ray

    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    sigterm = signal.getsignal(signal.SIGTERM)  # ray.init replaces it with sys.exit
    try:
        if address == "local" or (address is None and not os.environ.get("RAY_ADDRESS")):
            config = LOCAL_RAY_SYSTEM_CONFIG if system_config is None else system_config
            before = _child_pids()
            ray.init(
                address="local",
                num_cpus=num_cpus or len(usable_cpus()),
                include_dashboard=False,
                **({"_system_config": dict(config)} if config else {}),
                **quiet,
            )
            _embedded[:] = _ray_children(before)
        else:
            check_reachable(address or os.environ.get("RAY_ADDRESS", ""))
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or os.environ.get("RAY_ADDRESS")
        raise RaynnError(
            f"cannot connect to Ray at {where}: {exc}; start the cluster or fix --address"
        ) from None
    if callable(sigterm) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm)  # the caller's (raynn's: ends a run as Ctrl-C)
    return True


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`RaynnError` unless something accepts a connection at ``address``'s
    ``host:port`` (``ray://`` too) within ``timeout`` seconds: ``ray.init`` retries an address
    where nothing listens for many minutes. Addresses without a port (``auto``) are Ray's."""
    rest = address.removeprefix("ray://")
    if "://" in rest:
        return
    try:
        parts = urllib.parse.urlsplit("//" + rest)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is no number: ray.init says what is wrong
        return
    if not host or port is None:
        return
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise RaynnError(
            f"cannot reach a Ray cluster at {address} within {timeout:g} s ({reason}): start "
            "one with 'ray start --head', or fix --address (or RAY_ADDRESS)"
        ) from None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that the OS had free a moment ago (bound to port 0, closed).

    For Ray's head ports (the dashboard's 8265 and its agent's 52365 by default), which
    another Ray on the machine may hold; a caller that loses the port to a race retries.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shutdown_if_started(started: bool) -> None:
    """Stop Ray if ``started`` (what :func:`connect` returned) and it is still up."""
    import ray

    if started and ray.is_initialized():
        fast_shutdown()


def _child_pids() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children()}


def _ray_children(before: set[int]) -> list[Any]:
    """This process's children not in ``before`` (pids) that run one of Ray's own programs:
    a command line under Ray's package (``.../ray/core/src/ray/raylet/raylet``,
    ``.../ray/_private/log_monitor.py``, ...)."""
    import psutil
    import ray

    home = os.path.dirname(ray.__file__) + os.sep
    found = []
    for proc in psutil.Process().children():
        try:
            if proc.pid not in before and home in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:  # gone already
            pass
    return found


def embedded_processes() -> list[Any]:
    """The processes of the embedded Ray this process started, still running: Ray's daemons
    (``gcs_server``, ``raylet``, ...) and every process under them (Ray's workers, its
    agents, what those started), as ``psutil.Process``; empty without an embedded Ray."""
    import psutil

    found: list[Any] = []
    for proc in _embedded:
        try:
            if proc.is_running():  # and the same process: psutil checks its start time
                found += [proc, *proc.children(recursive=True)]
        except psutil.Error:
            pass
    return list(dict.fromkeys(found))


def fast_shutdown() -> None:
    """``ray.shutdown()`` of a Ray this process started, without its graceful waits.

    ``ray.shutdown()`` sends each of the processes ``ray.init`` started SIGTERM and waits up
    to 1 s for each to exit. The raylet and the GCS exit within a fraction of a second, but
    Ray's Python daemons (log monitor, autoscaler monitor, dashboard) let the wait run out
    (1.3 s in all here). Nothing of a finished run lives in them and the driver's disconnect
    does not go through them, so they are killed first; ``ray.shutdown()`` then stops the
    raylet and the GCS (killed before the driver disconnects, they would make it wait 5 s),
    and whatever of the embedded Ray still runs after it (the agents a raylet leaves behind)
    is killed. Only :func:`embedded_processes` are touched.
    """
    import ray

    procs = embedded_processes()
    daemons, _embedded[:] = list(_embedded), []
    _kill(p for p in daemons if _name(p) not in DISCONNECT_DAEMONS)
    ray.shutdown()
    _kill(procs)


def _name(proc: Any) -> str:
    import psutil

    try:
        return proc.name()
    except psutil.Error:
        return ""


def _kill(procs: Iterable[Any]) -> None:
    import psutil

    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:  # gone already
            pass


def remote_cause(exc: BaseException) -> BaseException:
    """The exception a Ray task or actor raised, where Ray carries it (``RayTaskError.cause``),
    else ``exc`` itself."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def remote_reason(exc: BaseException) -> str:
    """The one-line cause of a Ray error: ``Type: message`` of the remote exception where Ray
    carries it, else of ``exc`` (its last line)."""
    cause = remote_cause(exc)
    if cause is not exc:
        return f"{type(cause).__name__}: {cause}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"
