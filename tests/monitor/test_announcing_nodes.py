"""``vgw_vip_announcing_nodes{vip}``: the monitor leader counts, per VIP, the nodes whose route
control announces it. Real routectl processes (ExaBGP 5) peering with a real BIRD 2 write their
decisions to ``vgw_routes``; a real vgw-monitor process exports the count; the router's FIB is the
ground truth it must match."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.monitor.announcers import AnnouncerCount
from tests.monitor.monitorproc import MonitorProcess
from tests.routectl.conftest import BgpEnv, make_env
from tests.routectl.harness import BACKENDS, VIP, make_doc, until
from tests.routectl.lab import node_ip
from tests.support.nats_server import NatsServer
from vgw.bus import Bus
from vgw.config import ConfigDocument
from vgw.events import RouteReason, RouteState
from vgw.routes import RouteEntry

pytestmark = pytest.mark.integration

OTHER_VIP = "203.0.113.20"  # served by node 1 only


def start_monitor(nats_url: str, logdir: Path) -> MonitorProcess:
    return MonitorProcess(nats_url, "vp-count", logdir / "monitor.log", {"VGW_MONITOR_STEER": "false"})


def announcing(mon: MonitorProcess) -> dict[str, float] | None:
    """The monitor's vgw_vip_announcing_nodes by VIP; None while its /metrics does not answer yet."""
    try:
        text = mon.metrics()
    except OSError:
        return None
    return {m[0]: float(m[1]) for m in re.findall(r'^vgw_vip_announcing_nodes\{vip="([^"]+)"\} (\S+)$', text, re.M)}


def doc() -> ConfigDocument:
    raw = make_doc(2).model_dump(mode="json")
    other = {**raw["vips"][0], "address": OTHER_VIP, "nodes": ["n1"]}
    other["services"] = [{**other["services"][0], "name": "web-other"}]  # service names are unique
    raw["vips"].append(other)
    return ConfigDocument.model_validate(raw)


@pytest.fixture
async def env(tmp_path: Path, bus: Bus, nats_server: NatsServer) -> AsyncIterator[BgpEnv]:
    async for e in make_env(tmp_path, bus, nats_server, 2):
        yield e


async def test_the_count_follows_the_nodes_announcing(env: BgpEnv, tmp_path: Path) -> None:
    mon = start_monitor(env.nats.url, tmp_path)
    try:
        await env.apply(doc())
        env.beats[1].vips = [VIP, OTHER_VIP]  # node 1's forwarder programs both (as its shim would say)
        for i in (1, 2):
            env.routectl(i)
        await until(lambda: env.lab.fib_next_hops(VIP) == {node_ip(1), node_ip(2)}, 60, what="ECMP route")
        expect = functools.partial(_expect, mon)
        await until(expect({VIP: 2.0, OTHER_VIP: 1.0}), 15, what=f"2 and 1\n{mon.log.read_text()[-2000:]}")

        # node 1 loses its backends: it withdraws, the router keeps node 2, the count says 1
        for b in BACKENDS:
            await env.health[1].set(b, up=False)
        await until(lambda: env.lab.fib_next_hops(VIP) == {node_ip(2)}, 15, what="node 1 withdrawn")
        await until(expect({VIP: 1.0, OTHER_VIP: 0.0}), 10, what="1 and 0")

        # node 2 too: announced by no node, exactly what VgwVipAnnouncedByNoNode alerts on
        for b in BACKENDS:
            await env.health[2].set(b, up=False)
        await until(lambda: not env.lab.fib_next_hops(VIP), 15, what="withdrawn everywhere")
        await until(expect({VIP: 0.0, OTHER_VIP: 0.0}), 10, what="count 0")
    finally:
        mon.close()


def _expect(mon: MonitorProcess, want: dict[str, float]) -> functools.partial[bool]:
    return functools.partial(lambda: announcing(mon) == want)


def test_count_is_per_configured_vip_and_node() -> None:
    """VIPs come from the config: one nobody decided on counts 0; a disabled one is left out; an
    entry of a node the config no longer assigns to the VIP is not counted."""
    raw = make_doc(2).model_dump(mode="json")
    web = raw["vips"][0]["services"][0]
    raw["vips"] += [
        {**raw["vips"][0], "address": OTHER_VIP, "nodes": ["n1"], "services": [{**web, "name": "w2"}]},
        {**raw["vips"][0], "address": "203.0.113.30", "enabled": False, "services": [{**web, "name": "w3"}]},
    ]
    count = AnnouncerCount()
    count.set_config(ConfigDocument.model_validate(raw))
    now = datetime.now(UTC)

    def entry(node: str, vip: str, state: RouteState) -> RouteEntry:
        return RouteEntry(node=node, vip=vip, state=state, reason=RouteReason.GATES_OK, since=now, decided_at=now)  # type: ignore[arg-type]

    assert count.counts() == {VIP: 0, OTHER_VIP: 0}
    count.entries = {
        "a": entry("n1", VIP, RouteState.ANNOUNCED),
        "b": entry("n2", VIP, RouteState.DEPRIORITISED),
        "c": entry("n2", OTHER_VIP, RouteState.ANNOUNCED),  # n2 does not serve it
        "d": entry("n1", OTHER_VIP, RouteState.WITHDRAWN),
    }
    assert count.counts() == {VIP: 2, OTHER_VIP: 0}
