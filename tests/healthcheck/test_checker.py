"""The checker against real backends and a real nats-server: transitions only, with reasons,
shared probe streams, and the health bucket as level state."""

from __future__ import annotations

import asyncio

from services.healthcheck.checker import HealthChecker
from tests.integration.test_bus import Collector
from tests.support.backends import TcpBackend
from vgw.bus import Bus
from vgw.events import BackendDown, BackendUp, ProbeResult
from vgw.health import HEALTH_BUCKET, HealthEntry
from vgw.store import KvStore

from .helpers import Feed, document, service, tcp_check


async def test_kill_and_restart_backend_gives_one_down_then_one_up(bus: Bus) -> None:
    backend = await TcpBackend().start()
    events = Collector()
    await bus.subscribe(events, types=[BackendDown, BackendUp])
    feed = Feed()
    checker = HealthChecker(bus, "hc-1", feed, heartbeat_s=0.5)
    await checker.start()
    try:
        feed.push(document([tcp_check(rise=2, fall=3)], [service("web", 80, [("127.0.0.1", backend.port)])]))
        [up] = await events.wait_for(1)  # unknown -> up on the first success
        assert isinstance(up.event, BackendUp) and up.event.previous_state == "unknown"
        await asyncio.sleep(1.0)
        assert len(events.items) == 1, "an event while nothing changed"

        await backend.stop()
        items = await events.wait_for(2)
        down = items[1].event
        assert isinstance(down, BackendDown)
        assert (down.reason, down.consecutive, down.previous_state) == (ProbeResult.REFUSED, 3, "up")
        assert down.service == "web" and down.backend.port == backend.port and down.checker == "hc-1"
        await asyncio.sleep(1.0)
        assert len(events.items) == 2

        await backend.start(backend.port)
        items = await events.wait_for(3)
        up2 = items[2].event
        assert isinstance(up2, BackendUp) and up2.consecutive == 2 and up2.previous_state == "down"
        await asyncio.sleep(1.0)
        assert len(events.items) == 3

        store = await KvStore.open(bus, HEALTH_BUCKET, HealthEntry)
        key = f"127-0-0-1_{backend.port}.tcp"
        entry = await store.get(key)
        assert entry is not None and entry.value.state == "up" and entry.value.checker == "hc-1"
    finally:
        await checker.stop()
        await backend.stop()


async def test_services_sharing_a_backend_and_check_share_one_probe_stream(bus: Bus) -> None:
    backend = await TcpBackend().start()
    events = Collector()
    await bus.subscribe(events, types=[BackendDown, BackendUp])
    feed = Feed()
    checker = HealthChecker(bus, "hc-1", feed, heartbeat_s=0.5)
    await checker.start()
    try:
        b = [("127.0.0.1", backend.port)]
        feed.push(document([tcp_check(interval=0.2)], [service("web", 80, b), service("api", 443, b)]))
        items = await events.wait_for(2)  # one up event per service using the backend
        assert sorted(i.event.service for i in items) == ["api", "web"]  # type: ignore[attr-defined]
        assert len(checker.scheduler.jobs) == 1
        start = backend.connections
        await asyncio.sleep(2.0)
        probes = backend.connections - start
        # one stream at 0.2 s for 2 s is ~10 connections; two streams would be ~20
        assert 5 <= probes <= 15, probes
    finally:
        await checker.stop()
        await backend.stop()


async def test_disabled_backends_are_not_probed_and_changes_cause_no_flap(bus: Bus) -> None:
    a, b = await TcpBackend().start(), await TcpBackend().start()
    events = Collector()
    await bus.subscribe(events, types=[BackendDown, BackendUp])
    feed = Feed()
    checker = HealthChecker(bus, "hc-1", feed, heartbeat_s=0.5)
    await checker.start()
    try:
        backends = [{"address": "127.0.0.1", "port": a.port}, {"address": "127.0.0.1", "port": b.port}]
        svc = {"name": "web", "port": 80, "health_check": "tcp", "backends": backends}
        feed.push(document([tcp_check()], [svc]))
        await events.wait_for(2)
        # disable b, drain a: b's probe stops, a keeps being probed, no event for either
        backends = [{**backends[0], "state": "draining"}, {**backends[1], "state": "disabled"}]
        feed.push(document([tcp_check()], [{**svc, "backends": backends}]))
        await asyncio.sleep(0.5)
        b_before, a_before = b.connections, a.connections
        await asyncio.sleep(1.0)
        assert b.connections == b_before and a.connections > a_before
        assert len(events.items) == 2
        # a change of interval keeps the state: no new event
        feed.push(document([tcp_check(interval=0.3)], [{**svc, "backends": backends}]))
        await asyncio.sleep(1.0)
        assert len(events.items) == 2
    finally:
        await checker.stop()
        await a.stop()
        await b.stop()
