"""The zygote forks workers that share its payload and die with the process that made them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

from raynn.placement.processes import PipeProxy, Zygote, recv, send
from tests.conftest import REPO
from tests.executors import wait_for


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_workers_are_forked_with_the_payload_and_talk_over_their_pipe():
    zygote = Zygote(preload=["numpy"])
    try:
        zygote.load({"data": list(range(5))})
        pids = set()
        for tag in ("a", "b"):
            pid, conn = zygote.fork("tests.helpers:echo_worker", tag)
            got_tag, payload, reported, threads = recv(conn)
            assert (got_tag, payload, reported) == (tag, {"data": [0, 1, 2, 3, 4]}, pid)
            assert threads == 1  # a fresh fork: no thread but its own
            pids.add(pid)
        assert len(pids) == 2 and zygote.pid not in pids
    finally:
        zygote.close()
    assert wait_for(lambda: _gone(zygote.pid), 30)


def test_a_proxy_calls_the_driver_and_returns_its_answer():
    import socket
    from multiprocessing.connection import Connection

    a, b = socket.socketpair()
    driver, worker = Connection(os.dup(a.fileno())), Connection(os.dup(b.fileno()))
    a.close()
    b.close()
    proxy = PipeProxy(worker, "queue")

    def answer():
        target, method, args = recv(driver)
        send(driver, (target, method, args, lambda x: x + 1))  # a lambda crosses the pipe

    import threading

    t = threading.Thread(target=answer)
    t.start()
    target, method, args, fn = proxy.lease("w0")
    t.join()
    assert (target, method, args, fn(1)) == ("queue", "lease", ("w0",), 2)


DRIVER = """
import json, sys
from raynn.placement.processes import Zygote, recv
z = Zygote(preload=[])
z.load(None)
pid, conn = z.fork("tests.helpers:sleeping_worker", 600)
assert recv(conn) == pid
print(json.dumps({"zygote": z.pid, "worker": pid}), flush=True)
sys.stdin.read()
"""


def test_zygote_and_workers_die_with_a_killed_driver():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    pids = json.loads(driver.stdout.readline())
    assert not _gone(pids["zygote"]) and not _gone(pids["worker"])
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert wait_for(lambda: _gone(pids["zygote"]) and _gone(pids["worker"]), 30), pids


def test_the_zygote_is_single_threaded_so_forks_copy_a_whole_process():
    zygote = Zygote(preload=["torch", "raynn.kfold.executors.local"])
    try:
        zygote.load(None)
        pid, conn = zygote.fork("tests.helpers:echo_worker", "t")
        recv(conn)
        assert len(os.listdir(f"/proc/{zygote.pid}/task")) == 1
    finally:
        zygote.close()


EARLY = """
import sys
import raynn.placement.processes as processes

class Seen(Exception):
    pass

class Probe:
    def __init__(self, preload):
        raise Seen("torch imported first: %s" % ("torch" in sys.modules))

processes.Zygote = Probe
from raynn.cli import main
try:
    main(sys.argv[1:])
except Seen as seen:
    print(seen)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("executor", [[], ["--executor", "local"]])
def test_raynn_run_starts_the_zygote_before_it_imports_torch(executor):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    spec = str(REPO / "jobs" / "kfold_digits.yaml")
    out = subprocess.run(
        [sys.executable, "-c", EARLY, "run", spec, *executor],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert "torch imported first: False" in out.stdout, out.stdout + out.stderr
