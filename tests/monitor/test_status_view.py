"""`vgwctl status`'s live part: route decisions and the monitor's view, read from a real NATS."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_address

import pytest

from tests.support.nats_server import NatsServer, free_port
from vgw.bus import Bus
from vgw.cli import runtime_view
from vgw.events import RouteReason, RouteState, VipHealth
from vgw.monitoring import MONITOR_BUCKET, VipView, view_key
from vgw.routes import ROUTES_BUCKET, RouteEntry, route_key
from vgw.settings import VgwSettings
from vgw.store import KvStore


async def test_status_shows_decisions_and_monitor_view(
    bus: Bus, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    vip = ip_address("203.0.113.10")
    routes = await KvStore.open(bus, ROUTES_BUCKET, RouteEntry)
    await routes.put(route_key("node-a", vip), RouteEntry(
        node="node-a", vip=vip, state=RouteState.WITHDRAWN, reason=RouteReason.NODE_WITHDRAW_REQUEST,
        detail="monitor/vp1: probes through node-a fail", since=now, decided_at=now,
    ))  # fmt: skip
    mon = await KvStore.open(bus, MONITOR_BUCKET, VipView)
    await mon.put(view_key(vip, 80), VipView(
        vip=vip, port=80, protocol="tcp", probe="http-80", status=VipHealth.DEGRADED, routed="ok",
        nodes={"node-a": "withdrawn", "node-b": "ok"}, vantages=["vp1"], requests=["node node-a: blackhole"],
        leader="vp1", updated_at=now, detail="failing through node(s) node-a",
    ))  # fmt: skip
    monkeypatch.setenv("VGW_NATS_URL", nats_server.url)
    view = await runtime_view.read(VgwSettings())
    text = "\n".join(runtime_view.render(view))
    assert view["routes"][0]["state"] == "withdrawn"
    assert "node-a" in text and "node_withdraw_request" in text
    assert "203.0.113.10:80" in text and "degraded" in text and "node-a=withdrawn" in text and "node-b=ok" in text
    assert "request in force" in text


async def test_status_without_nats_says_so() -> None:
    settings = VgwSettings(nats_url=f"nats://127.0.0.1:{free_port()}")
    view = await runtime_view.read(settings, timeout_s=3)
    assert "unreachable" in view["error"]
    assert "unreachable" in "\n".join(runtime_view.render(view))
