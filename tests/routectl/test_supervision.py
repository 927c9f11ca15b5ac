"""routectl's long-running tasks are supervised: a fault injected into each task kind is logged,
counted in ``vgw_task_restarts_total{service="routectl",task}``, turns readiness false while the
task is down, and the task recovers and does its job again.

routectl runs in this process (real NATS, real BIRD lab, its real ExaBGP) so the test can make one
of its tasks' steps raise."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from ipaddress import ip_address

import pytest

from services.routectl import sessions
from services.routectl.app import Routectl
from services.routectl.settings import RoutectlSettings
from tests.routectl.conftest import BgpEnv, inprocess_routectl
from tests.routectl.harness import VIP, make_doc, until
from tests.support.inprocess import Fault, fails_then_recovers, task_restarts
from vgw.bgp import open_bgp
from vgw.events import RouteReason, RouteState
from vgw.routes import ROUTES_BUCKET, RouteEntry, route_key
from vgw.runtime import Runtime
from vgw.store import KvStore

pytestmark = pytest.mark.integration


@pytest.fixture
async def routectl(bgp1: BgpEnv) -> AsyncIterator[tuple[Routectl, Runtime[RoutectlSettings]]]:
    async with inprocess_routectl(bgp1) as (app, rt):
        yield app, rt


def _state(app: Routectl) -> RouteState | None:
    d = app._applied.get(ip_address(VIP))
    return d.state if d is not None else None


async def test_each_task_recovers(bgp1: BgpEnv, routectl: tuple[Routectl, Runtime[RoutectlSettings]]) -> None:
    app, rt = routectl
    await until(lambda: _state(app) == RouteState.ANNOUNCED, 30, what="VIP announced")

    # config: a step of applying a revision fails; afterwards a new revision is applied
    fault = Fault(app._apply_config)
    app._apply_config = fault  # type: ignore[method-assign]
    before = task_restarts("routectl", "config")
    fault.armed = True
    rev = await bgp1.apply(make_doc(1, backends=["198.51.100.21", "198.51.100.22", "198.51.100.23"]))
    await fails_then_recovers(rt, "config", fault, before)
    await until(lambda: app._revision == rev, 10, what="the new revision applied after the restart")

    # health: a health change fails to apply; afterwards health follows the bucket again
    fault = Fault(app._on_health_change)
    app._on_health_change = fault  # type: ignore[method-assign]
    before = task_restarts("routectl", "health")
    fault.armed = True
    await bgp1.health[1].set_all(False, ["198.51.100.21", "198.51.100.22", "198.51.100.23"])
    await fails_then_recovers(rt, "health", fault, before)
    # decide: the evaluation fails; afterwards the withdrawal the health change calls for happens
    fault = Fault(app.decider.decide)
    app.decider.decide = fault  # type: ignore[method-assign]
    before = task_restarts("routectl", "decide")
    fault.armed = True
    await fails_then_recovers(rt, "decide", fault, before)
    await until(lambda: _state(app) == RouteState.WITHDRAWN, 10, what="VIP withdrawn (health down)")
    d = app._applied[ip_address(VIP)]
    assert d.reason == RouteReason.BELOW_LOW_WATERMARK, d

    # routes: another node's decision fails to apply; afterwards the watch sees it
    fault = Fault(app._on_route_change)
    app._on_route_change = fault  # type: ignore[method-assign]
    before = task_restarts("routectl", "routes")
    fault.armed = True
    routes = await KvStore.open(bgp1.bus, ROUTES_BUCKET, RouteEntry, history=5)
    now = datetime.now(UTC)
    other = RouteEntry(
        node="n9", vip=VIP, state=RouteState.ANNOUNCED, reason=RouteReason.GATES_OK, since=now, decided_at=now
    )
    await routes.put(route_key("n9", VIP), other)
    await fails_then_recovers(rt, "routes", fault, before)
    await until(lambda: any(e.node == "n9" for e in app._others.values()), 10, what="n9's decision seen")

    # bgp-sessions: building the sessions record fails; afterwards it is written again
    fault = Fault(sessions.node_sessions)
    original = sessions.node_sessions
    sessions.node_sessions = fault
    try:
        bgp = await open_bgp(bgp1.bus, create=False)
        before = task_restarts("routectl", "bgp-sessions")
        fault.armed = True
        await fails_then_recovers(rt, "bgp-sessions", fault, before)
        since = datetime.now(UTC)
        deadline = asyncio.get_running_loop().time() + 15
        while (e := await bgp.get("n1")) is None or e.value.at < since:
            assert asyncio.get_running_loop().time() < deadline, "BGP sessions not written again within 15 s"
            await asyncio.sleep(0.1)
    finally:
        sessions.node_sessions = original
