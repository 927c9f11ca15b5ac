"""The monitor's long-running tasks are supervised: a fault injected into each task kind is logged,
counted in ``vgw_task_restarts_total{service="monitor",task}``, turns readiness false while the task
is down, and the task recovers and does its job again.

The monitor runs in this process (real NATS, its real probes from an empty namespace) so the test
can make one of its tasks' steps raise; a scripted vantage point supplies the observations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from ipaddress import ip_address

import pytest

from services.monitor.app import MonitorApp, MonitorSettings
from tests.monitor.inproc import VIP_A, FakeVantage, empty_netns, settings, two_vip_doc
from tests.routectl.harness import commit, until
from tests.support.inprocess import Fault, fails_then_recovers, running, task_restarts
from tests.support.nats_server import NatsServer
from vgw.bus import Bus
from vgw.config import ConfigDocument
from vgw.config.store import ConfigStore
from vgw.events import NodeWithdrawRequest, RouteReason, RouteState
from vgw.routes import ROUTES_BUCKET, RouteEntry, route_key
from vgw.runtime import Runtime
from vgw.store import KvStore
from vgw.withdraw_requests import WITHDRAWALS_BUCKET, Withdrawal, withdrawal_key

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def monitor(nats_server: NatsServer, bus: Bus) -> AsyncIterator[tuple[MonitorApp, Runtime[MonitorSettings]]]:
    await commit(await ConfigStore(bus).open(), two_vip_doc())
    with empty_netns() as ns:
        app = MonitorApp(settings(nats_server.url, "m1", ns, monitor_max_withdrawals_per_min=3))
        async with running("monitor", app, app.s) as rt:
            await until(lambda: app.leading and bool(app.paths), 20, what="monitor leading and probing")
            yield app, rt


def counting(fn: Callable[[], Awaitable[None]]) -> tuple[Callable[[], Awaitable[None]], list[int]]:
    calls = [0]

    async def wrapped() -> None:
        calls[0] += 1
        await fn()

    return wrapped, calls


def with_interval(doc: ConfigDocument, interval: float) -> ConfigDocument:
    raw = doc.model_dump(mode="json")
    for vip in raw["vips"]:
        for probe in vip["monitor"]:
            probe["interval"] = interval
    return ConfigDocument.model_validate(raw)


async def test_each_task_recovers(bus: Bus, monitor: tuple[MonitorApp, Runtime[MonitorSettings]]) -> None:
    app, rt = monitor
    assert app.lease is not None and app._store is not None
    async with FakeVantage(bus).running() as vp:
        # observations: mirroring a change fails; afterwards the other vantage point's are mirrored
        fault = Fault(app._on_observations)
        app._on_observations = fault  # type: ignore[method-assign]
        before = task_restarts("monitor", "observations")
        fault.armed = True
        await fails_then_recovers(rt, "observations", fault, before)
        since = datetime.now(UTC)
        await until(
            lambda: any(o.vantage == "vpx" and o.updated_at > since for o in app.observations.values()),
            10,
            what="vpx's observations mirrored again",
        )

        # config: applying a revision fails; afterwards the new revision's probes run
        fault = Fault(app._reconfigure)
        app._reconfigure = fault  # type: ignore[method-assign]
        before = task_restarts("monitor", "config")
        fault.armed = True
        await commit(await ConfigStore(bus).open(), with_interval(two_vip_doc(), 0.6))
        await fails_then_recovers(rt, "config", fault, before)
        await until(
            lambda: bool(app.paths) and all(p.probe.interval == 0.6 for p in app.paths.values()),
            10,
            what="the new revision's probes",
        )

        # probes: one path's probe raises (its task dies); afterwards that path probes again
        key, path = next(iter(app.paths.items()))
        fault = Fault(path._prober.probe)
        path._prober.probe = fault  # type: ignore[method-assign]
        before = task_restarts("monitor", "probes")
        fault.armed = True
        await fails_then_recovers(rt, "probes", fault, before)
        since = datetime.now(UTC)
        await until(
            lambda: any(
                o.vantage == "m1" and o.path == key.path and str(o.vip) == key.vip and o.updated_at > since
                for o in app.observations.values()
            ),
            10,
            what="the path probing again",
        )

        # withdrawals: following the rate limit's count fails; afterwards it follows it again
        fault = Fault(app._on_withdrawals)
        app._on_withdrawals = fault  # type: ignore[method-assign]
        before = task_restarts("monitor", "withdrawals")
        fault.armed = True
        counted = await KvStore.open(bus, WITHDRAWALS_BUCKET, Withdrawal, create=False)
        await counted.put(withdrawal_key("by-hand"), Withdrawal(request_id="by-hand", key="node.n9.x"))
        await fails_then_recovers(rt, "withdrawals", fault, before)
        await until(
            lambda: app.judge.recorded_withdrawals is not None and "by-hand" in app.judge.recorded_withdrawals,
            10,
            what="the withdrawals followed again",
        )

        # announcers: a route change fails to apply; afterwards the count sees it
        routes = await KvStore.open(bus, ROUTES_BUCKET, RouteEntry, history=5)
        fault = Fault(app.announcers.apply)
        app.announcers.apply = fault  # type: ignore[method-assign]
        before = task_restarts("monitor", "announcers")
        fault.armed = True
        now = datetime.now(UTC)
        entry = RouteEntry(
            node="n1", vip=ip_address(VIP_A), state=RouteState.ANNOUNCED, reason=RouteReason.GATES_OK, since=now,
            decided_at=now,
        )  # fmt: skip
        await routes.put(route_key("n1", VIP_A), entry)
        await fails_then_recovers(rt, "announcers", fault, before)
        await until(lambda: app.announcers.counts().get(VIP_A) == 1, 10, what="the announcer count again")

        # steering: restoring the routes fails; afterwards it runs every 2 s again
        wrapped, calls = counting(app._restore_steering)
        fault = Fault(wrapped)
        app._restore_steering = fault  # type: ignore[method-assign]
        before = task_restarts("monitor", "steering")
        fault.armed = True
        await fails_then_recovers(rt, "steering", fault, before)
        seen = calls[0]
        await until(lambda: calls[0] > seen, 10, what="steering restored again")

        # lease: a renewal step raises; afterwards the lease is held and the monitor leads again
        fault = Fault(app.lease.step)
        app.lease.step = fault  # type: ignore[method-assign]
        before = task_restarts("monitor", "lease")
        fault.armed = True
        await fails_then_recovers(rt, "lease", fault, before)
        await until(lambda: app.leading, 10, what="leading again")

        # judge: a round fails; afterwards the monitor judges again: a blackholing node is withdrawn
        requests: list[NodeWithdrawRequest] = []

        async def on_request(r: object) -> None:
            ev = getattr(r, "event", None)
            if isinstance(ev, NodeWithdrawRequest):
                requests.append(ev)

        await bus.subscribe(on_request, types=[NodeWithdrawRequest])
        fault = Fault(app._judge_once)
        app._judge_once = fault  # type: ignore[method-assign]
        before = task_restarts("monitor", "judge")
        fault.armed = True
        vp.failing.add((VIP_A, "n1"))
        await fails_then_recovers(rt, "judge", fault, before)
        await until(lambda: any(r.node == "n1" for r in requests), 15, what="n1 withdrawn after the restart")
