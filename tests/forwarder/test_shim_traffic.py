"""The shim's traffic snapshots (``vgw_traffic``) and ``vgwctl top`` over them, with real HTTP traffic
through a real vgw-fwd (DPDK af_packet in namespaces), a real shim process and a real nats-server:
the snapshot carries the forwarder's own per-service and per-backend totals, and ``top`` turns two
snapshots into rates while clients send requests."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.forwarder.conftest import needs_lab
from tests.forwarder.shimproc import seed, vgw_shim, wait_for
from tests.forwarder.topology import BACKEND_IPS, VIP, Topology, http_requests
from tests.support.nats_server import NatsServer
from vgw.bus import Bus
from vgw.fwdctl import FwdClient
from vgw.store import KvStore
from vgw.traffic import TRAFFIC_BUCKET, NodeTraffic

pytestmark = [needs_lab, pytest.mark.integration]

NODE = "node-top"


def vgwctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vgw.cli.main", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_snapshots_carry_forwarder_totals_and_top_shows_rates(
    lab: Topology, nats_server: NatsServer, bus: Bus, child_env: dict[str, str], tmp_path: Path
) -> None:
    await seed(bus, NODE, reason="top")
    fwd = lab.start_forwarder(workers=1)
    env = {**child_env, "VGW_NATS_URL": nats_server.url}
    shim_env = {**env, "VGW_NODE_ID": NODE, "VGW_FWD_SOCKET": str(fwd.socket), "VGW_METRICS_ADDR": "127.0.0.1:0"}
    shim_log = tmp_path / "shim.log"
    with vgw_shim(shim_env, shim_log):
        # The shim writes a snapshot per STATS read once the forwarder runs the service.
        traffic: KvStore[NodeTraffic] = await wait_for(
            lambda: _open(bus), 20, f"the {TRAFFIC_BUCKET} bucket\n{shim_log.read_text()[-3000:]}"
        )

        async def snapshot() -> NodeTraffic | None:
            got = await traffic.get(NODE)
            return got.value if got and "web" in got.value.services else None

        await wait_for(snapshot, 20, f"a snapshot with service web\n{shim_log.read_text()[-3000:]}")
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
            snap = await wait_for(same_as_forwarder, 10, "a snapshot with the forwarder's totals")
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


async def _open(bus: Bus) -> KvStore[NodeTraffic] | None:
    try:
        return await KvStore.open(bus, TRAFFIC_BUCKET, NodeTraffic, create=False)
    except Exception:
        return None
