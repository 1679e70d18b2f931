"""End to end on a real local cluster: cluster/local.sh up, ray job submit, raynn submit, down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from raynn.placement.session import free_port
from tests.conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]
BIN = Path(sys.executable).parent


def _live_members(pgid: int) -> list[str]:
    out = subprocess.run(
        ["ps", "-o", "stat=,cmd=", "--sid", str(pgid)], capture_output=True, text=True
    ).stdout
    return [line for line in out.splitlines() if line.strip() and not line.startswith("Z")]


def _cluster_env(state: Path, port_base: int) -> dict[str, str]:
    env = {
        **os.environ,
        "RAYNN_CLUSTER_DIR": str(state),
        # free ports, so two suites on one machine (CI beside a developer's run) do not clash
        "RAYNN_HEAD_PORT": str(free_port()),
        "RAYNN_DASHBOARD_PORT": str(free_port()),
        "RAYNN_PORT_BASE": str(port_base),
        "RAY": str(BIN / "ray"),
        "PYTHON": sys.executable,
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    env.pop("RAY_ADDRESS", None)
    return env


def test_an_up_that_fails_stops_the_nodes_it_started(tmp_path):
    # (first in the file: it runs before the module's cluster is up.) The head comes up, the
    # worker node never joins (a ray that only sleeps, as a node too slow under load would
    # look): 'up' must fail with one line and leave nothing of the half-started cluster.
    state = tmp_path / "cluster"
    ray = tmp_path / "ray"
    ray.write_text(
        "#!/usr/bin/env bash\n"
        f'echo $$ >> "{state}/started"\n'
        'if [[ " $* " == *" --address "* ]]; then exec sleep 600; fi\n'
        f'exec "{BIN / "ray"}" "$@"\n'
    )
    ray.chmod(0o755)
    env = {
        **_cluster_env(state, 21500 + 3000 * (os.getpid() % 4)),
        "RAY": str(ray),
        "RAYNN_UP_TIMEOUT": "10",
    }
    script = str(REPO / "cluster" / "local.sh")
    up = subprocess.run(
        [script, "up", "--workers", "1"], env=env, capture_output=True, text=True, timeout=300
    )
    assert up.returncode == 2, up.stdout + up.stderr
    assert "nodes came up" in up.stderr and "up failed; stopping the nodes" in up.stderr
    started = [int(p) for p in (state / "started").read_text().split()]
    assert len(started) in (1, 2)  # the head (unless it was too slow itself), the worker
    assert all(not _live_members(p) for p in started), [_live_members(p) for p in started]
    assert not list(state.glob("*.pid")) and not (state / "ray_temp_dir").exists()


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("cluster")
    script = str(REPO / "cluster" / "local.sh")
    for attempt in range(3):  # a port taken meanwhile (an up that fails stops what it started)
        env = _cluster_env(state, 20000 + 3000 * ((os.getpid() + attempt) % 4))
        up = subprocess.run(
            [script, "up", "--workers", "1"], env=env, capture_output=True, text=True, timeout=300
        )
        if up.returncode == 0:
            break
    assert up.returncode == 0, up.stdout + up.stderr
    pids = [int(p.read_text()) for p in state.glob("*.pid")]
    for line in subprocess.run(
        [script, "env"], env=env, capture_output=True, text=True
    ).stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    yield env
    down = subprocess.run([script, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert all(not _live_members(p) for p in pids), [_live_members(p) for p in pids]
    assert not list(state.glob("*.pid")) and not (state / "ray_temp_dir").exists()


def test_ray_job_submit_runs_a_spec_on_both_nodes(local_cluster, tmp_path):
    # the README's cluster line (a smaller spec than the demo, which test_demo runs whole),
    # with the spec's relative output.dir (runs): the rows must not land in Ray's temporary
    # copy of the working dir
    out = tmp_path / "runs"
    env_vars = json.dumps({"env_vars": {"RAYNN_RESULTS_HOME": str(tmp_path)}})
    proc = subprocess.run(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--working-dir",
            str(REPO),
            "--runtime-env-json",
            env_vars,
            "--",
            "raynn",
            "run",
            "tests/data/cluster_kfold.yaml",
            "--no-progress",
        ],
        env=local_cluster,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = list(out.iterdir())
    assert f"results: {run_dir}" in proc.stdout and "jobs: 6 ok" in proc.stdout
    jobs = pd.read_parquet(run_dir / "jobs")
    assert len(jobs) == 6 and jobs["job_id"].is_unique and (jobs["status"] == "ok").all()
    assert jobs["node"].nunique() == 2
    assert not pd.read_parquet(run_dir / "epochs").empty


def test_raynn_submit_waits_and_streams_logs(local_cluster, tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "raynn",
            "submit",
            "tests/data/tiny_kfold.yaml",
            "--wait",
            "--address",
            local_cluster["RAY_ADDRESS"],
            "--output",
            str(out),
        ],
        env={**local_cluster, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "submitted raysubmit_" in proc.stdout and "jobs: 4 ok" in proc.stdout
    assert "SUCCEEDED" in proc.stdout
    (run_dir,) = list(out.iterdir())
    assert len(pd.read_parquet(run_dir / "jobs")) == 4


def test_raynn_submit_refuses_a_malformed_spec_before_sending(local_cluster, tmp_path):
    bad = REPO / "tests" / "data" / "bad_model.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "raynn", "submit", str(bad)],
        cwd=REPO,
        env={**local_cluster, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "resnet0" in proc.stderr and "Traceback" not in proc.stderr


def _listening(pids: set[int]) -> list[tuple[str, int, str]]:
    """``(address, port, process name)`` of every TCP socket the processes listen on."""
    import re
    import shutil

    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to read the listening sockets")
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if int(pid) in pids:
                found.append((address.strip("[]").removeprefix("::ffff:"), int(port), name))
    return found


def test_the_cluster_listens_where_its_docs_say_and_wants_the_token(local_cluster):
    import urllib.error
    import urllib.request

    state = Path(local_cluster["RAY_AUTH_TOKEN_PATH"]).parent
    pids = set()
    for pid_file in state.glob("*.pid"):
        out = subprocess.run(
            ["ps", "-o", "pid=", "--sid", pid_file.read_text().strip()],
            capture_output=True,
            text=True,
        ).stdout
        pids |= {int(p) for p in out.split()}
    sockets = _listening(pids)
    dashboard = int(local_cluster["RAY_ADDRESS"].rsplit(":", 1)[1])
    assert {a for a, port, _ in sockets if port == dashboard} == {"127.0.0.1"}, sockets
    # what stays reachable from outside: Ray's own servers (cluster/README.md lists them)
    exposed = {name for a, _, name in sockets if a not in ("127.0.0.1", "::1")}
    assert exposed and all(
        n.startswith(("gcs_server", "raylet", "ray::", "python")) for n in exposed
    )
    # the head's Python servers open to all: only the two metrics ports local.sh assigns
    base = int(local_cluster["RAYNN_PORT_BASE"])
    python_open = {p for a, p, n in sockets if n.startswith("python") and a in ("0.0.0.0", "*")}
    assert python_open == {base + 5, base + 6}, sockets
    client = {a for a, p, _ in sockets if p == base + 7}  # the Ray Client server, its own port
    assert "127.0.0.1" in client and not client & {"0.0.0.0", "*"}, sockets
    # the token guards the job API that 'ray job submit' uses
    url = f"{local_cluster['RAY_ADDRESS']}/api/jobs/"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=30)
    assert refused.value.code == 401
    token = Path(local_cluster["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    assert urllib.request.urlopen(request, timeout=30).status == 200
    # this cluster's own Ray temp dir, not the machine's /tmp/ray
    temp = Path((state / "ray_temp_dir").read_text().strip())
    assert temp.is_dir() and (temp / "session_latest").exists()
