"""``vgwctl get health``: the health a real vgw-healthcheck process writes for real backends (a TCP
listener, a closed port) on loopback, laid out by the services of the document a real vgw-config
serves, over a real nats-server; its table, ``--service``, ``--watch`` and an unreachable NATS."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cli.vgwctl import REPO, run
from tests.cli.watching import watch_frames
from tests.config.conftest import ConfigService
from tests.support.backends import TcpBackend
from tests.support.nats_server import NatsServer, free_port
from vgw.bus import Bus
from vgw.config import ConfigDocument
from vgw.config.store import ConfigStore
from vgw.health import HEALTH_BUCKET, HealthEntry
from vgw.store import KvStore

pytestmark = pytest.mark.integration


@dataclass
class World:
    env: dict[str, str]
    up_port: int
    down_port: int


def document(up_port: int, down_port: int) -> ConfigDocument:
    check = {"name": "tcp", "kind": "tcp", "interval": 1.5, "timeout": 1.0, "rise": 1, "fall": 1, "jitter": 0}
    return ConfigDocument.model_validate(
        {
            "version": 1,
            "clusters": [{"name": "lab"}],
            "health_checks": [check],
            "vips": [
                {
                    "address": "203.0.113.10",
                    "cluster": "lab",
                    "services": [
                        {
                            "name": "web",
                            "port": 80,
                            "health_check": "tcp",
                            "backends": [
                                {"address": "127.0.0.1", "port": up_port},
                                {"address": "127.0.0.1", "port": down_port, "state": "draining"},
                            ],
                        },
                        {
                            "name": "dns",
                            "port": 53,
                            "protocol": "udp",
                            "backends": [{"address": "127.0.0.1", "port": 53}],
                        },
                    ],
                }
            ],
        }
    )


@pytest.fixture
async def world(bus: Bus, nats_server: NatsServer, child_env: dict[str, str], tmp_path: Path) -> AsyncIterator[World]:
    up = await TcpBackend("accept").start()
    down_port = free_port()  # nothing listens: refused
    # The backends are local listeners: loopback addresses the config API would refuse, so the
    # document goes into the store directly and nobody re-checks it (as tests/healthcheck do).
    await (await ConfigStore(bus).open()).commit(document(up.port, down_port), actor="test", reason="health view")
    env = {**child_env, "VGW_NATS_URL": nats_server.url, "VGW_CONFIG_RECHECK": "false"}
    config = ConfigService(nats_server, tmp_path / "config", env).start()
    hc = subprocess.Popen(
        [sys.executable, "-m", "services.healthcheck.main"],
        env={**env, "VGW_INSTANCE_ID": "hc-view", "VGW_METRICS_ADDR": f"127.0.0.1:{free_port()}"},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "hc.log").open("wb"),
    )
    try:
        health = await KvStore.attach(bus, HEALTH_BUCKET, HealthEntry)
        deadline = asyncio.get_running_loop().time() + 30
        while len(await health.snapshot()) < 2:
            assert asyncio.get_running_loop().time() < deadline, (tmp_path / "hc.log").read_text()[-3000:]
            await asyncio.sleep(0.1)
        yield World({**env, "VGW_CONFIG_ADDR": config.addr}, up.port, down_port)
    finally:
        hc.terminate()
        try:
            hc.wait(15)
        except subprocess.TimeoutExpired:
            hc.kill()
            hc.wait()
        config.stop(kill=True)
        await up.stop()


async def vgwctl(world: World, *argv: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run, *argv, env=world.env)


def backends(data: dict[str, Any], service: str) -> dict[str, dict[str, Any]]:
    (svc,) = [s for s in data["services"] if s["service"] == service]
    return {b["backend"]: b for b in svc["backends"]}


async def test_json_shows_each_backend_as_the_healthcheck_wrote_it(world: World) -> None:
    import json

    started = datetime.now(UTC)
    r = await vgwctl(world, "get", "health", "-o", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["revision"] == 1
    web = backends(data, "web")
    up, down = web[f"127.0.0.1:{world.up_port}"], web[f"127.0.0.1:{world.down_port}"]
    assert (up["health"], up["checked"], up["reason"], up["config_state"]) == ("up", True, "ok", "enabled")
    assert (down["health"], down["checked"], down["reason"], down["config_state"]) == (
        "down", True, "refused", "draining",
    )  # fmt: skip
    assert up["checker"] == down["checker"] == "hc-view"
    assert datetime.fromisoformat(up["since"]) <= started and up["probe_port"] == world.up_port
    (svc,) = [s for s in data["services"] if s["service"] == "web"]
    assert (svc["vip"], svc["port"], svc["check"], svc["check_kind"], svc["healthy"]) == (
        "203.0.113.10",
        80,
        "tcp",
        "tcp",
        1,
    )
    # a service without a health check: its backends are always healthy, and said to be unchecked
    (dns,) = backends(data, "dns").values()
    assert (dns["health"], dns["checked"]) == ("up", False)

    only = json.loads((await vgwctl(world, "get", "health", "--service", "web", "-o", "json")).stdout)
    assert [s["service"] for s in only["services"]] == ["web"]


async def test_table_filter_and_errors(world: World) -> None:
    r = await vgwctl(world, "get", "health")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "config revision 1: web 1/2 healthy, dns 1/1 healthy"
    assert lines[2].split() == ["SERVICE", "BACKEND", "CONFIG", "HEALTH", "SINCE", "CHECK", "LAST", "PROBE"]
    down_row = next(ln for ln in lines if f":{world.down_port}" in ln).split()
    assert down_row[:4] == ["web", f"127.0.0.1:{world.down_port}", "draining", "down"] and "refused:" in down_row

    missing = await vgwctl(world, "get", "health", "--service", "nope")
    assert (missing.returncode, missing.stdout) == (6, "")
    assert "no service 'nope'" in missing.stderr

    with_name = await vgwctl(world, "get", "health", "web")
    assert with_name.returncode == 2 and "takes no NAME" in with_name.stderr


async def test_watch_refreshes_until_interrupted(world: World) -> None:
    frames, code, err = await asyncio.to_thread(
        watch_frames, "get", "health", "--watch", "0.3", "-o", "json", env=world.env, frames=3
    )
    assert code == 130, err
    assert [f["revision"] for f in frames] == [1, 1, 1]
    ats = [datetime.fromisoformat(f["at"]) for f in frames]
    assert ats == sorted(ats) and len(set(ats)) == 3


def test_unreachable_nats_exits_3(child_env: dict[str, str]) -> None:
    r = run("get", "health", "--nats", f"nats://127.0.0.1:{free_port()}", env=child_env, timeout=30)
    assert r.returncode == 3 and r.stdout == ""
    assert "cannot reach NATS at nats://127.0.0.1:" in r.stderr
