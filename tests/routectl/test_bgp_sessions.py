"""routectl publishes its BGP sessions to ``vgw_bgp`` and ``vgwctl bgp`` shows them: a real routectl
(ExaBGP 5 in its namespace) peering with a real BIRD 2, a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.routectl.conftest import BgpEnv
from tests.routectl.harness import REPO, VIP, until
from tests.routectl.lab import ROUTER_ASN, ROUTER_IP, node_ip
from vgw.bgp import BGP_BUCKET, NodeBgp
from vgw.store import KvStore

pytestmark = pytest.mark.integration


def vgwctl_bgp(nats_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "OTEL_"))}
    env |= {"PYTHONPATH": str(REPO), "VGW_NATS_URL": nats_url}
    return subprocess.run(
        [sys.executable, "-m", "vgw.cli.main", "bgp", *extra], env=env, capture_output=True, text=True, timeout=30
    )


def peer_of(out: str, node: str) -> dict[str, Any]:
    (n,) = [n for n in json.loads(out)["nodes"] if n["node"] == node]
    (p,) = n["peers"]
    return {**p, "speaker_up": n["speaker_up"], "local_asn": n["local_asn"], "router_id": n["router_id"]}


async def shown_where(
    env: BgpEnv, pred: Callable[[dict[str, Any]], bool], timeout: float, *extra: str
) -> dict[str, Any]:
    """n1's peer as ``vgwctl bgp -o json`` shows it, once ``pred`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        r = await asyncio.to_thread(vgwctl_bgp, env.nats.url, "-o", "json", *extra)
        assert r.returncode == 0, r.stderr
        p = peer_of(r.stdout, "n1")
        if pred(p):
            return p
        assert time.monotonic() < deadline, f"{p}\n{env.logs()}"
        await asyncio.sleep(0.2)


async def test_sessions_are_published_and_shown(bgp1: BgpEnv) -> None:
    env = bgp1
    started = datetime.now(UTC)
    env.routectl(1)
    await until(lambda: env.lab.fib_next_hops(VIP) == {node_ip(1)}, 30.0, what=f"announced\n{env.logs()}")
    assert env.lab.protocols() == {"n1": "Established"}
    store = await KvStore.open(env.bus, BGP_BUCKET, NodeBgp, create=False)

    async def entry_where(pred: Callable[[NodeBgp], bool], timeout: float) -> NodeBgp:
        deadline = time.monotonic() + timeout
        while True:
            got = await store.get("n1")
            if got is not None and pred(got.value):
                return got.value
            assert time.monotonic() < deadline, f"vgw_bgp entry {got}\n{env.logs()}"
            await asyncio.sleep(0.1)

    # routectl writes on the change: the session up with the VIP announced to it
    await entry_where(lambda e: bool(e.peers) and e.peers[0].state == "up" and e.peers[0].routes_announced == 1, 10)

    # the session is live (hold time 3 s on a busy machine): read until vgwctl shows it established
    p = await shown_where(env, lambda p: p["state"] == "up" and p["routes_announced"] == 1, 15)
    assert (p["peer"], p["asn"], p["state"], p["routes_announced"]) == (ROUTER_IP, ROUTER_ASN, "up", 1)
    assert p["speaker_up"] and p["router_id"] == node_ip(1)
    assert started <= datetime.fromisoformat(p["since"]) <= datetime.now(UTC)

    deadline = time.monotonic() + 15
    while True:
        table = await asyncio.to_thread(vgwctl_bgp, env.nats.url)
        assert table.returncode == 0, table.stderr
        line = next(ln for ln in table.stdout.splitlines() if ln.startswith("n1 "))
        if " up " in line:
            break
        assert time.monotonic() < deadline, table.stdout
        await asyncio.sleep(0.2)
    assert line.split()[1:3] == [ROUTER_IP, str(ROUTER_ASN)] and line.split()[-2:] == ["1", "-"], line

    # The router drops the session (BIRD disables its protocol): routectl reports it down, 0 routes.
    env.lab.birdc("disable", "n1")
    await entry_where(lambda e: e.peers[0].state != "up", 15)
    p = await shown_where(env, lambda p: p["state"] != "up", 15, "--node", "n1")
    assert p["routes_announced"] == 0, p
