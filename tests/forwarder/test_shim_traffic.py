"""The shim's traffic snapshots (``vgw_traffic``) and ``vgwctl top`` over them, with real HTTP traffic
through a real vgw-fwd (DPDK af_packet in namespaces), a real shim process and a real nats-server:
the snapshot carries the forwarder's own per-service and per-backend totals, and ``top`` turns two
snapshots into rates while clients send requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dataplane.shim.fwdctl import FwdClient
from tests.conftest import REPO
from tests.forwarder.conftest import needs_lab
from tests.forwarder.topology import BACKEND_IPS, EXT_IP, INT_IP, LIP, VIP, Topology, http_requests
from tests.support.nats_server import NatsServer
from vgw.bus import Bus
from vgw.config.store import ConfigStore
from vgw.config.validate import load_document
from vgw.events import BackendState, ProbeResult
from vgw.health import HEALTH_BUCKET, HealthEntry, health_key
from vgw.store import KvStore
from vgw.traffic import TRAFFIC_BUCKET, NodeTraffic

pytestmark = [needs_lab, pytest.mark.integration]

NODE = "node-top"
CHECK = "web-tcp"
CONFIG = f"""
version: 1
clusters: [{{name: lab}}]
nodes:
  - {{id: {NODE}, cluster: lab, external: {{address: {EXT_IP}/24}}, internal: {{address: {INT_IP}/24}},
     lip_pool: [{LIP}]}}
health_checks:
  - {{name: {CHECK}, kind: tcp, interval: 1s}}
vips:
  - address: {VIP}
    cluster: lab
    services:
      - name: web
        port: 80
        scheduler: wrr
        health_check: {CHECK}
        backends:
{"".join(f"          - {{address: {ip}, port: 80}}{chr(10)}" for ip in BACKEND_IPS)}
"""


@pytest.fixture
def lab(tmp_path: Path) -> AsyncIterator[Topology]:  # type: ignore[misc]
    topo = Topology(tmp_path / "lab")
    try:
        topo.build()
        topo.start_backends()
        yield topo
    finally:
        with contextlib.suppress(Exception):
            topo.kill_forwarder()
        topo.close()


async def until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return v
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.05)


def up(ip: str) -> HealthEntry:
    return HealthEntry(
        address=ip,  # type: ignore[arg-type]
        port=80,
        check=CHECK,
        kind="tcp",
        state=BackendState.UP,
        reason=ProbeResult.OK,
        since=datetime.now(UTC),
        checker="test",
    )


def vgwctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vgw.cli.main", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_snapshots_carry_forwarder_totals_and_top_shows_rates(
    lab: Topology, nats_server: NatsServer, child_env: dict[str, str], tmp_path: Path
) -> None:
    bus = Bus({"servers": [nats_server.url], "reconnect_time_wait": 0.2}, source="/vgw/tests/top")
    await bus.connect()
    await bus.ensure_event_stream()
    await (await ConfigStore(bus).open()).commit(load_document(CONFIG), actor="test", reason="top")
    hkv = await KvStore.open(bus, HEALTH_BUCKET, HealthEntry)
    for ip in BACKEND_IPS:
        await hkv.put(health_key(ip, 80, CHECK), up(ip))
    fwd = lab.start_forwarder(workers=1)
    env = {**child_env, "VGW_NATS_URL": nats_server.url}
    shim_env = {**env, "VGW_NODE_ID": NODE, "VGW_FWD_SOCKET": str(fwd.socket), "VGW_METRICS_ADDR": "127.0.0.1:0"}
    shim_log = tmp_path / "shim.log"
    with shim_log.open("w") as log:
        shim = subprocess.Popen(
            [sys.executable, "-m", "dataplane.shim.main"],
            env=shim_env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    try:
        # The shim writes a snapshot per STATS read once the forwarder runs the service.
        traffic: KvStore[NodeTraffic] = await until(
            lambda: _open(bus), 20, f"the {TRAFFIC_BUCKET} bucket\n{shim_log.read_text()[-3000:]}"
        )

        async def snapshot() -> NodeTraffic | None:
            got = await traffic.get(NODE)
            return got.value if got and "web" in got.value.services else None

        await until(snapshot, 20, f"a snapshot with service web\n{shim_log.read_text()[-3000:]}")
        res = await asyncio.to_thread(http_requests, lab, 20)
        assert res["nerrors"] == 0, res

        # top while clients keep sending: rates over two snapshots, summed over the (one) node
        stop = threading.Event()

        def clients() -> None:
            while not stop.is_set():
                http_requests(lab, 20)

        load = threading.Thread(target=clients)
        load.start()
        try:
            r = await asyncio.to_thread(vgwctl, env, "top", "-o", "json")
        finally:
            stop.set()
            await asyncio.to_thread(load.join, 60)
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert [n["node"] for n in data["nodes"]] == [NODE] and data["nodes_without_rates"] == [], data
        (svc,) = data["services"]
        assert (svc["service"], svc["vip"], svc["port"], svc["proto"], svc["nodes"]) == ("web", VIP, 80, "tcp", [NODE])
        assert svc["conn_new_per_s"] > 0 and svc["packets_in_per_s"] > 0 and svc["packets_out_per_s"] > 0, svc
        assert svc["bytes_in_per_s"] > svc["packets_in_per_s"] and svc["bytes_out_per_s"] > 0, svc
        # per backend: every backend under its service, new connections/s where WRR sent them
        assert [(b["address"], b["port"], b["nodes"]) for b in svc["backends"]] == [
            (ip, 80, [NODE]) for ip in BACKEND_IPS
        ]
        assert all(b["conn_new_per_s"] > 0 for b in svc["backends"]) and svc["backends_complete"], svc
        (vip,) = data["vips"]
        assert vip["vip"] == VIP and vip["packets_per_s"] == pytest.approx(svc["packets_per_s"], abs=0.01)
        assert 0.5 < data["nodes"][0]["interval_s"] < 5

        # Traffic over: once the counters stop moving, the snapshot holds exactly the forwarder's totals.
        counters = ("conn_new", "packets_in", "packets_out", "bytes_in", "bytes_out")
        c = FwdClient(str(fwd.socket))

        async def same_as_forwarder() -> NodeTraffic | None:
            fwd_web = (await c.stats())["services"]["web"]
            s = await snapshot()
            if s is None or any(getattr(s.services["web"], k) != fwd_web[k] for k in counters):
                return None
            backends = [(str(b.address), b.port, b.conn_new) for b in s.services["web"].backends]
            return s if backends == [(b["address"], b["port"], b["conn_new"]) for b in fwd_web["backends"]] else None

        try:
            snap = await until(same_as_forwarder, 10, "a snapshot with the forwarder's totals")
        finally:
            await c.close()
        web = snap.services["web"]
        assert web.conn_new >= 40
        # the backends' new connections are the service's: every connection went to one of them
        assert sum(b.conn_new for b in web.backends) == web.conn_new and web.backends_total == len(BACKEND_IPS)

        table = await asyncio.to_thread(vgwctl, env, "top")
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        at = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["web", f"{VIP}:80/tcp"])
        assert [ln.split()[0] for ln in lines[at + 1 : at + 4]] == [f"{ip}:80" for ip in BACKEND_IPS], table.stdout
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shim.pid, signal.SIGTERM)
        try:
            shim.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(shim.pid, signal.SIGKILL)
            shim.wait(timeout=5)
        await bus.close()


async def _open(bus: Bus) -> KvStore[NodeTraffic] | None:
    try:
        return await KvStore.open(bus, TRAFFIC_BUCKET, NodeTraffic, create=False)
    except Exception:
        return None
