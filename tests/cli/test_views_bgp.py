"""``vgwctl bgp`` over a real nats-server: node entries written the way routectl writes them
(:func:`vgw.bgp.open_bgp`, :class:`vgw.bgp.NodeBgp`); the JSON, the table, a stale node, ``--node``,
``--watch`` and an unreachable NATS. routectl publishing its real sessions with a real BIRD peer is
in tests/routectl/test_bgp_sessions.py."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.cli.vgwctl import run
from tests.cli.watching import watch_frames
from tests.support.nats_server import NatsServer, free_port
from vgw.bgp import NodeBgp, PeerSession, open_bgp
from vgw.bus import Bus

pytestmark = pytest.mark.integration

SINCE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def seed(bus: Bus) -> None:
    store = await open_bgp(bus)
    now = datetime.now(UTC)
    await store.put(
        "n1",
        NodeBgp(
            node="n1", at=now, speaker_up=True, local_asn=65001, router_id="192.0.2.11",
            peers=[
                PeerSession(peer="192.0.2.1", asn=64512, state="up", since=SINCE, routes_announced=3),
                PeerSession(peer="192.0.2.2", asn=64512, state="connect", since=SINCE, routes_announced=0),
            ],
        ),
    )  # fmt: skip
    # a routectl that stopped writing a minute ago (its entry not yet expired): stale
    await store.put(
        "n2",
        NodeBgp(node="n2", at=now - timedelta(seconds=60), speaker_up=False, local_asn=65001, router_id="192.0.2.12",
                peers=[PeerSession(peer="192.0.2.1", asn=64512, state="down")]),
    )  # fmt: skip


async def test_json_and_table(bus: Bus, nats_server: NatsServer, child_env: dict[str, str]) -> None:
    await seed(bus)
    env = {**child_env, "VGW_NATS_URL": nats_server.url}
    r = await asyncio.to_thread(run, "bgp", "-o", "json", env=env)
    assert r.returncode == 0, r.stderr
    nodes = {n["node"]: n for n in json.loads(r.stdout)["nodes"]}
    n1, n2 = nodes["n1"], nodes["n2"]
    assert (n1["speaker_up"], n1["local_asn"], n1["router_id"], n1["stale"]) == (True, 65001, "192.0.2.11", False)
    assert [(p["peer"], p["state"], p["routes_announced"]) for p in n1["peers"]] == [
        ("192.0.2.1", "up", 3), ("192.0.2.2", "connect", 0),
    ]  # fmt: skip
    assert datetime.fromisoformat(n1["peers"][0]["since"]) == SINCE
    assert n2["stale"] and n2["age_s"] >= 60 and not n2["speaker_up"]

    table = await asyncio.to_thread(run, "bgp", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NODE", "PEER", "ASN", "STATE", "SINCE", "ROUTES", "NOTE"]
    assert lines[1].split()[:5] == ["n1", "192.0.2.1", "64512", "up", "2026-01-02T03:04:05+00:00"]
    assert lines[1].split()[-2:] == ["3", "-"]  # 3 routes, no note
    assert lines[3].startswith("n2 ") and re.search(r"stale: reported 6\ds ago$", lines[3]), lines[3]

    only = json.loads((await asyncio.to_thread(run, "bgp", "--node", "n2", "-o", "json", env=env)).stdout)
    assert [n["node"] for n in only["nodes"]] == ["n2"]


async def test_watch_until_interrupted(bus: Bus, nats_server: NatsServer, child_env: dict[str, str]) -> None:
    await seed(bus)
    env = {**child_env, "VGW_NATS_URL": nats_server.url}
    frames, code, err = await asyncio.to_thread(watch_frames, "bgp", "-w", "0.3", "-o", "json", env=env, frames=2)
    assert code == 130, err
    assert [sorted(n["node"] for n in f["nodes"]) for f in frames] == [["n1", "n2"], ["n1", "n2"]]


async def test_nothing_reported_yet(nats_server: NatsServer, child_env: dict[str, str]) -> None:
    r = await asyncio.to_thread(run, "bgp", env={**child_env, "VGW_NATS_URL": nats_server.url})
    assert r.returncode == 0 and r.stdout.startswith("no BGP sessions reported"), r


def test_unreachable_nats_exits_3(child_env: dict[str, str]) -> None:
    r = run("--nats", f"nats://127.0.0.1:{free_port()}", "bgp", env=child_env, timeout=30)
    assert (r.returncode, r.stdout) == (3, "")
    assert "cannot reach NATS" in r.stderr
