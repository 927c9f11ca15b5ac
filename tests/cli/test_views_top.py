"""``vgwctl top`` over a real nats-server: traffic snapshots of three nodes are written the way the
shim writes them (:func:`vgw.traffic.node_traffic` of a STATS reply, :func:`open_traffic`), with
counters growing at known rates, so the figures vgwctl prints -- sums over nodes, rates from two
snapshots -- can be checked exactly. The real shim against a real forwarder is in
tests/forwarder/test_shim_traffic.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.cli.vgwctl import run
from tests.cli.watching import watch_frames
from tests.support.nats_server import NatsServer, free_port
from vgw.bus import Bus
from vgw.traffic import node_traffic, open_traffic

pytestmark = pytest.mark.integration

VIP, OTHER_VIP = "192.0.2.10", "192.0.2.20"
BE1, BE2, BE_DNS = "198.51.100.1", "198.51.100.2", "198.51.100.53"
T0 = datetime.now(UTC)
# per node: service -> (vip, port, proto, active connections, per-second rates of the counters,
# backends as (address, port, active connections, new connections/s))
RATES = ("conn_new", "packets_in", "packets_out", "bytes_in", "bytes_out")
Backends = tuple[tuple[str, int, int, float], ...]
NODES: dict[str, dict[str, tuple[str, int, str, int, tuple[float, ...], Backends]]] = {
    "n1": {"web": (VIP, 80, "tcp", 5, (10, 100, 80, 10_000, 50_000), ((BE1, 80, 2, 4), (BE2, 80, 3, 6)))},
    "n2": {
        "web": (VIP, 80, "tcp", 7, (5, 50, 40, 5_000, 25_000), ((BE1, 80, 4, 1), (BE2, 80, 3, 4))),
        "dns": (OTHER_VIP, 53, "udp", 2, (20, 20, 20, 1_500, 3_000), ((BE_DNS, 53, 2, 20),)),
    },
}
RESTARTING = "n3"  # its forwarder restarts before every snapshot: connections count, rates cannot


def stats(node: str, at: datetime, pid: int) -> dict[str, Any]:
    """A STATS reply of the forwarder's shape (docs/forwarder.md) whose counters grew at RATES since T0."""
    elapsed = (at - T0).total_seconds()
    services = {}
    for name, (vip, port, proto, active, rates, backends) in NODES.get(node, {}).items():
        services[name] = {"vip": vip, "port": port, "proto": proto, "conn_active": active, "syn_cookie_sent": 0}
        services[name] |= {c: round(r * elapsed) for c, r in zip(RATES, rates, strict=True)}
        services[name]["backends"] = [
            {"address": a, "port": p, "conn_active": n, "conn_new": round(r * elapsed)} for a, p, n, r in backends
        ]
    if node == RESTARTING:
        services["web"] = {"vip": VIP, "port": 80, "proto": "tcp", "conn_active": 3, "conn_new": 1, "packets_in": 9,
                           "backends": [{"address": BE1, "port": 80, "conn_active": 3, "conn_new": 1}]}  # fmt: skip
    return {"pid": pid, "uptime_ms": 1000, "generation": 1, "counters": {}, "services": services}


@pytest.fixture
async def shims(bus: Bus) -> AsyncIterator[None]:
    """Every node writes a snapshot every 0.2 s until the test ends."""
    store = await open_traffic(bus)
    stop = asyncio.Event()

    async def write() -> None:
        pid = 100
        while not stop.is_set():
            at = datetime.now(UTC)
            pid += 1
            for node in ("n1", "n2", RESTARTING):
                await store.put(node, node_traffic(node, stats(node, at, pid if node == RESTARTING else 7), at))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    task = asyncio.create_task(write())
    try:
        yield
    finally:
        # A flag, not a cancel: on Python 3.11 a cancel that races a completing wait_for inside a
        # NATS request can be swallowed, and the loop then never ended (a 300 s teardown hang).
        stop.set()
        await asyncio.wait_for(task, 10)


def env_for(nats: NatsServer, child_env: dict[str, str]) -> dict[str, str]:
    return {**child_env, "VGW_NATS_URL": nats.url}


def check_frame(data: dict[str, Any]) -> None:
    assert [n["node"] for n in data["nodes"]] == ["n1", "n2", "n3"]
    assert data["nodes_without_rates"] == [RESTARTING]
    by = {s["service"]: s for s in data["services"]}
    web, dns = by["web"], by["dns"]
    assert (web["vip"], web["port"], web["proto"], web["nodes"]) == (VIP, 80, "tcp", ["n1", "n2", "n3"])
    assert web["conn_active"] == 5 + 7 + 3
    # rates summed over n1 and n2 (rounding of the counters: within 1 unit per interval of >= 0.2 s)
    for key, want in (("conn_new_per_s", 15), ("packets_in_per_s", 150), ("packets_out_per_s", 120),
                      ("bytes_in_per_s", 15_000), ("bytes_out_per_s", 75_000), ("packets_per_s", 270)):  # fmt: skip
        assert web[key] == pytest.approx(want, abs=10), (key, web)
    assert (dns["vip"], dns["proto"], dns["conn_active"], dns["nodes"]) == (OTHER_VIP, "udp", 2, ["n2"])
    assert dns["conn_new_per_s"] == pytest.approx(20, abs=10)
    # per backend: connections from every node, new connections/s from the nodes with rates
    assert [(b["address"], b["port"], b["conn_active"], b["nodes"]) for b in web["backends"]] == [
        (BE1, 80, 2 + 4 + 3, ["n1", "n2", "n3"]),
        (BE2, 80, 3 + 3, ["n1", "n2"]),
    ]
    assert web["backends"][0]["conn_new_per_s"] == pytest.approx(4 + 1, abs=10)
    assert web["backends"][1]["conn_new_per_s"] == pytest.approx(6 + 4, abs=10)
    assert web["backends_complete"] and dns["backends_complete"]
    (dns_be,) = dns["backends"]
    assert (dns_be["address"], dns_be["port"], dns_be["conn_active"]) == (BE_DNS, 53, 2)
    assert dns_be["conn_new_per_s"] == pytest.approx(20, abs=10)
    vips = {v["vip"]: v for v in data["vips"]}
    assert vips[VIP]["conn_active"] == 15 and vips[VIP]["services"] == 1
    assert vips[VIP]["bytes_per_s"] == pytest.approx(90_000, abs=20)
    assert vips[OTHER_VIP]["packets_per_s"] == pytest.approx(40, abs=20)


async def test_json_sums_nodes_and_rates_from_two_snapshots(
    shims: None, nats_server: NatsServer, child_env: dict[str, str]
) -> None:
    r = await asyncio.to_thread(run, "top", "-o", "json", env=env_for(nats_server, child_env))
    assert r.returncode == 0, r.stderr
    check_frame(json.loads(r.stdout))

    only = json.loads((await asyncio.to_thread(run, "top", "-o", "json", "--vip", OTHER_VIP,
                                               env=env_for(nats_server, child_env))).stdout)  # fmt: skip
    assert [s["service"] for s in only["services"]] == ["dns"]
    node = json.loads((await asyncio.to_thread(run, "top", "-o", "json", "--node", "n1",
                                               env=env_for(nats_server, child_env))).stdout)  # fmt: skip
    assert [(s["service"], s["conn_active"]) for s in node["services"]] == [("web", 5)]
    assert [(b["address"], b["conn_active"]) for b in node["services"][0]["backends"]] == [(BE1, 2), (BE2, 3)]
    bare = json.loads((await asyncio.to_thread(run, "top", "-o", "json", "--no-backends",
                                               env=env_for(nats_server, child_env))).stdout)  # fmt: skip
    assert [s["service"] for s in bare["services"]] == ["dns", "web"]
    assert not any("backends" in s or "backends_complete" in s for s in bare["services"]), bare


async def test_table(shims: None, nats_server: NatsServer, child_env: dict[str, str]) -> None:
    r = await asyncio.to_thread(run, "top", env=env_for(nats_server, child_env))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "nodes: n1, n2, n3"
    assert lines[1].startswith("no rates yet for n3 ")
    assert lines[lines.index("per VIP:") + 1].split() == ["VIP", "SERVICES", "CONNS", "NEW/S", "PKTS/S", "BYTES/S"]
    vip_row = next(ln for ln in lines if ln.startswith(VIP + " ")).split()
    assert vip_row[:3] == [VIP, "1", "15"] and vip_row[5].endswith("k")
    svc_row = next(ln for ln in lines if ln.startswith("dns ")).split()
    assert svc_row[:3] == ["dns", f"{OTHER_VIP}:53/udp", "2"] and svc_row[-1] == "1"
    # backend rows follow their service's row: connections, new/s, no packet or byte rates, nodes
    web_at = next(i for i, ln in enumerate(lines) if ln.startswith("web "))
    be1, be2 = lines[web_at + 1].split(), lines[web_at + 2].split()
    assert be1[:3] == [f"{BE1}:80", "-", "9"] and be1[4:] == ["-", "-", "-", "-", "3"], be1
    assert be2[:3] == [f"{BE2}:80", "-", "6"] and be2[-1] == "2", be2
    assert lines[lines.index(next(ln for ln in lines if ln.startswith("dns "))) + 1].split()[0] == f"{BE_DNS}:53"
    bare = await asyncio.to_thread(run, "top", "--no-backends", env=env_for(nats_server, child_env))
    assert bare.returncode == 0 and BE1 not in bare.stdout and "dns " in bare.stdout, bare.stdout


async def test_watch_prints_a_frame_per_interval_until_interrupted(
    shims: None, nats_server: NatsServer, child_env: dict[str, str]
) -> None:
    frames, code, err = await asyncio.to_thread(
        watch_frames, "top", "-o", "json", "--watch", "0.5", env=env_for(nats_server, child_env), frames=3
    )
    assert code == 130, err
    for f in frames:
        check_frame(f)


async def test_no_snapshots_yet(nats_server: NatsServer, child_env: dict[str, str]) -> None:
    env = env_for(nats_server, child_env)
    r = await asyncio.to_thread(run, "top", env=env)
    assert (r.returncode, r.stdout.strip()) == (
        0,
        "no traffic snapshots (is vgw-shim running, connected to its forwarder?)",
    )
    data = json.loads((await asyncio.to_thread(run, "top", "-o", "json", env=env)).stdout)
    assert (data["nodes"], data["services"], data["vips"]) == ([], [], [])


def test_unreachable_nats_exits_3(child_env: dict[str, str]) -> None:
    r = run("top", "-o", "json", "--nats", f"nats://127.0.0.1:{free_port()}", env=child_env, timeout=30)
    assert (r.returncode, r.stdout) == (3, "")
    assert "cannot reach NATS" in r.stderr


def test_bad_watch_interval_is_a_usage_error(child_env: dict[str, str]) -> None:
    r = run("top", "--watch", "soon", env=child_env, timeout=30)
    assert r.returncode == 2 and "'soon' is not a number of seconds" in r.stderr
