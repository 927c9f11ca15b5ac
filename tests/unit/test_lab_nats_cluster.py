"""`vgwctl lab up --nats-cluster N`: the argument, and the servers' configuration files (the lab
itself runs in tests/lab/test_nats_cluster_lab.py)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.lab import natscluster
from deploy.lab.lab import Lab


@pytest.mark.parametrize("value", ["2", "0", "three"])
def test_bad_cluster_size_is_refused_before_anything_runs(child_env: dict[str, str], value: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "vgw.cli.main", "lab", "--id", "zq", "up", "--nats-cluster", value],
        env=child_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r
    assert "--nats-cluster" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not Path("/run/vgw-lab/zq.json").exists() and not Path("/tmp/vgw-lab-zq").exists()


def test_lab_refuses_an_even_cluster() -> None:
    with pytest.raises(ValueError, match="--nats-cluster 2"):
        Lab("zq", progress=lambda _m: None, nats_cluster=2)


@pytest.mark.parametrize("secure", [True, False])
def test_each_server_routes_to_the_others_with_a_password(tmp_path: Path, secure: bool) -> None:
    servers = natscluster.plan("zq", tmp_path / "nats", tmp_path, [4001, 4002, 4003], [6001, 6002, 6003])
    natscluster.write(servers, "vgw-lab-zq", secure)
    passwords = set()
    for s in servers:
        text = s.conf.read_text()
        assert stat.S_IMODE(s.conf.stat().st_mode) == 0o600
        assert f'listen: "127.0.0.1:{s.port}"' in text and f'listen: "127.0.0.1:{s.route_port}"' in text
        assert f'store_dir: "{s.store_dir}"' in text and f'server_name: "{s.name}"' in text
        routes = text.split("routes: [", 1)[1].split("]", 1)[0]
        assert f":{s.route_port}" not in routes and routes.count("nats-route://route:") == 2
        passwords.add(text.split('password: "', 1)[1].split('"', 1)[0])
        assert ("include ./tls.conf" in text) is secure and ("include ./authorization.conf" in text) is secure
    assert len(passwords) == 1 and len(passwords.pop()) == 32  # one secret per lab, shared by its servers


def test_a_cluster_needs_two_servers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least two servers"):
        natscluster.plan("zq", tmp_path, tmp_path, [4001], [6001])
