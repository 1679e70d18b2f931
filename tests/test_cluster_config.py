"""The provided cluster files keep token auth on and the dashboard on loopback."""

from __future__ import annotations

import subprocess

import yaml

from tests.conftest import REPO


def test_cluster_yaml_is_an_on_prem_config_with_token_auth():
    cfg = yaml.safe_load((REPO / "cluster" / "cluster.yaml").read_text())
    assert cfg["provider"]["type"] == "local"
    assert cfg["provider"]["head_ip"] and cfg["provider"]["worker_ips"]
    assert cfg["max_workers"] == len(cfg["provider"]["worker_ips"])
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts)
    assert all("RAY_worker_niceness=0" in c for c in starts)  # not Ray's nice 15
    assert all("ray stop" not in c for c in starts)
    assert "--dashboard-host=127.0.0.1" in cfg["head_start_ray_commands"][0]
    assert any("pip install" in c and "raynn" in c for c in cfg["setup_commands"])


def test_local_sh_is_valid_bash_that_binds_loopback_only():
    script = REPO / "cluster" / "local.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "--dashboard-host 127.0.0.1" in text and "--node-ip-address 127.0.0.1" in text
    assert "RAY_AUTH_MODE=token" in text and "ray stop" not in text
    assert "export RAY_worker_niceness=0" in text
    usage = subprocess.run(["bash", str(script), "bogus"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr
