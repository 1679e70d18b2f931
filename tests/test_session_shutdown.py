"""The embedded Ray's fast shutdown: Ray's own processes die at once, and nothing else does
(raynn's zygote and the workers it forked, other children of the run); no private Ray API."""

from __future__ import annotations

import ast
import subprocess
import sys
from multiprocessing.connection import Connection

import psutil
import pytest

from raynn.placement import session
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(300)


def hold(conn: Connection, payload: object) -> None:
    """A forked worker's target: wait until the driver closes its end of the pipe."""
    try:
        conn.recv_bytes()
    except EOFError:
        pass


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_no_module_uses_ray_s_private_api():
    """``ray._private`` is Ray's to change: raynn imports and names only Ray's public API."""
    used = []
    for path in sorted((REPO / "raynn").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Attribute) and node.attr == "_private":
                names = ["ray._private"] if isinstance(node.value, ast.Name) else []
            used += [f"{path.name}: {n}" for n in names if n.startswith("ray._private")]
    assert not used


@pytest.mark.ray
def test_fast_shutdown_kills_ray_s_processes_and_nothing_else():
    """A zygote, its forked worker and a plain child (one started before Ray, one while it is
    up) outlive the shutdown; Ray's daemons and workers do not."""
    import ray

    from raynn.placement.processes import Zygote

    if ray.is_initialized():
        pytest.skip("a Ray is already up in this process")
    zygote = Zygote(preload=())
    zygote.load(None)
    worker, conn = zygote.fork("tests.test_session_shutdown:hold")
    late = None
    try:
        assert session.embedded_processes() == []
        started = session.connect("local", 2)
        assert started
        late = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        daemons = session.embedded_processes()
        assert {"raylet", "gcs_server"} <= {p.name() for p in daemons}
        mine = {zygote.pid, worker, late.pid}
        assert not mine & {p.pid for p in daemons}

        @ray.remote
        def pid() -> int:
            import os

            return os.getpid()

        workers = set(ray.get([pid.remote() for _ in range(2)]))
        assert workers <= {p.pid for p in session.embedded_processes()}
        ray_procs = session.embedded_processes()
        session.shutdown_if_started(started)
        assert not ray.is_initialized() and session.embedded_processes() == []
        _, alive = psutil.wait_procs(ray_procs, timeout=30)
        assert not alive, alive
        assert all(_alive(p) for p in mine), [(p, _alive(p)) for p in mine]
    finally:
        conn.close()
        zygote.close()
        if late is not None:
            late.stdin.close()
            late.wait(timeout=30)
        if ray.is_initialized():
            ray.shutdown()
