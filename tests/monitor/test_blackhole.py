"""A node that silently blackholes a VIP: the monitor finds it, asks routectl to withdraw it, the
client recovers through the router; after the repair, the announcement returns after the
hold-down. Real BIRD, real ExaBGP/routectl, real nats-server, HTTP servers in namespaces."""

from __future__ import annotations

import asyncio
import functools
import random
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.test_bus import Collector
from tests.monitor.monitorproc import MonitorProcess
from tests.routectl.conftest import BgpEnv, make_env
from tests.routectl.harness import VIP, make_doc, until
from tests.routectl.lab import node_ip
from tests.support.nats_server import NatsServer
from vgw.bus import Bus
from vgw.config import ConfigDocument
from vgw.events import MonitorVipStatus, NodeWithdrawRequest, RequestAction, VipHealth, VipWithdraw
from vgw.monitoring import MONITOR_BUCKET, VipView, view_key
from vgw.store import KvStore

from .topology import MonitorLab

HOLD_DOWN_S = 3.0
WITHDRAW_BOUND_S = 5.0  # issue #18: fault -> the router has withdrawn the node


def doc_with_probe() -> ConfigDocument:
    """The lab's probe (docs/config-example.yaml: every 2 s, 1 s timeout), so the time measured here
    is the demo's."""
    raw = make_doc(2).model_dump(mode="json")
    raw["vips"][0]["monitor"] = [{"kind": "http", "port": 80, "interval": 2.0, "timeout": 1.0, "per_node": True}]
    return ConfigDocument.model_validate(raw)


def start_monitor(env: BgpEnv, mlab: MonitorLab, vantage: str, logdir: Path) -> MonitorProcess:
    """A monitor probing from mlab's vantage point with the lab's settings (deploy/lab/lab.py: a
    verdict after 2 failures, judging every 0.5 s); a restore waits HOLD_DOWN_S (not the lab's 10 s)."""
    settings = {
        "VGW_MONITOR_NETNS": mlab.vantage_ns,
        "VGW_MONITOR_HOLD_DOWN_S": str(HOLD_DOWN_S),
        "VGW_MONITOR_FAIL_AFTER": "2",
        "VGW_MONITOR_JUDGE_INTERVAL_S": "0.5",
    }
    return MonitorProcess(env.nats.url, vantage, logdir / f"monitor-{vantage}.log", settings)


def ecmp_both(env: BgpEnv) -> bool:
    return env.lab.fib_next_hops(VIP) == {node_ip(1), node_ip(2)}


@pytest.fixture
async def world(tmp_path: Path, bus: Bus, nats_server: NatsServer) -> AsyncIterator[tuple[BgpEnv, MonitorLab]]:
    async for env in make_env(tmp_path, bus, nats_server, 2):
        mlab = MonitorLab(env.lab, tmp_path / "mon")
        try:
            mlab.start()
            await env.apply(doc_with_probe())
            for i in (1, 2):
                env.routectl(i)
            await until(functools.partial(ecmp_both, env), 60, what="ECMP route")
            yield env, mlab
        finally:
            mlab.close()


async def test_blackholing_node_is_withdrawn_and_restored(world: tuple[BgpEnv, MonitorLab], tmp_path: Path) -> None:
    env, mlab = world
    requests, statuses, withdraws = Collector(), Collector(), Collector()
    await env.bus.subscribe(requests, types=[NodeWithdrawRequest])
    await env.bus.subscribe(statuses, types=[MonitorVipStatus])
    await env.bus.subscribe(withdraws, types=[VipWithdraw])
    mon = start_monitor(env, mlab, "vp1", tmp_path)
    try:
        [first] = await statuses.wait_for(1, timeout=30)
        assert first.event.status is VipHealth.OK, first.event  # type: ignore[attr-defined]
        ok, n = await asyncio.to_thread(mlab.client_requests, 20)
        assert ok == n

        # The fault at a random moment of the probes' period: the steps above start at a moment the
        # probes set (the first status), which would bias the time measured below.
        await asyncio.sleep(random.uniform(0, 2.2))
        fault_at = datetime.now(UTC)
        mlab.blackhole(1)
        # Fault -> the router's FIB keeps only n2: the whole chain (probes, verdict, request, routectl,
        # BGP), polled every 50 ms.
        at_router = await until(lambda: env.lab.fib_next_hops(VIP) == {node_ip(2)}, 15, what="router keeps only n2")
        [req] = await requests.wait_for(1, timeout=5)
        assert req.meta.time is not None
        detected = (req.meta.time - fault_at).total_seconds()
        ev = req.event
        assert isinstance(ev, NodeWithdrawRequest)
        assert (ev.node, str(ev.vip), ev.action) == ("n1", VIP, RequestAction.WITHDRAW), ev
        assert "n1" in ev.reason and ev.expires_at is not None and ev.evidence
        assert at_router <= WITHDRAW_BOUND_S, f"withdrawn at the router {at_router:.2f}s after the fault"
        await withdraws.wait_for(1, timeout=10)
        assert withdraws.items[0].event.node == "n1"  # type: ignore[attr-defined]
        ok, n = await asyncio.to_thread(mlab.client_requests, 20)
        assert ok == n, f"client saw {n - ok} failures after the withdraw"

        # The status event said "degraded" (with evidence) when it changed; the view in KV says why now.
        async with asyncio.timeout(10):
            while not [s for s in statuses.items if s.event.status is VipHealth.DEGRADED]:  # type: ignore[attr-defined]
                await asyncio.sleep(0.1)
        degraded = next(s.event for s in statuses.items if s.event.status is VipHealth.DEGRADED)  # type: ignore[attr-defined]
        assert degraded.evidence  # type: ignore[attr-defined]
        views = await KvStore.open(env.bus, MONITOR_BUCKET, VipView)
        async with asyncio.timeout(10):
            while True:
                view = await views.get(view_key(VIP, 80))
                if view is not None and view.value.nodes.get("n1") == "withdrawn":
                    break
                await asyncio.sleep(0.2)
        assert view.value.status is VipHealth.DEGRADED and view.value.nodes["n2"] == "ok", view.value
        assert any("n1" in r for r in view.value.requests), view.value

        mlab.repair(1)
        t1 = time.monotonic()
        await until(lambda: env.lab.fib_next_hops(VIP) == {node_ip(1), node_ip(2)}, 30, what="n1 announced again")
        restored_after = time.monotonic() - t1
        restores = [r.event for r in requests.items if r.event.action is RequestAction.RESTORE]  # type: ignore[attr-defined]
        assert restores and restores[-1].request_id == ev.request_id
        assert restored_after >= HOLD_DOWN_S, f"restored after {restored_after:.1f}s, before the hold-down"
        metrics = await asyncio.to_thread(mon.metrics)
        assert 'vgw_monitor_success_ratio{path="n1",port="80",vip="203.0.113.10"}' in metrics
        assert "vgw_monitor_probe_duration_seconds_bucket" in metrics
        print(
            f"blackhole: withdraw request {detected:.2f}s, withdrawn at the router {at_router:.2f}s after the "
            f"fault; restored {restored_after:.2f}s after repair"
        )
    finally:
        mon.close()
        (tmp_path / "monitor-log.txt").write_text(mon.log.read_text(errors="replace")[-20000:])


async def test_no_withdraw_for_a_lost_vantage_point_or_when_everything_fails(
    world: tuple[BgpEnv, MonitorLab], tmp_path: Path
) -> None:
    env, mlab = world
    requests, statuses = Collector(), Collector()
    await env.bus.subscribe(requests, types=[NodeWithdrawRequest])
    await env.bus.subscribe(statuses, types=[MonitorVipStatus])
    mon = start_monitor(env, mlab, "vp1", tmp_path)
    both = {node_ip(1), node_ip(2)}
    try:
        await statuses.wait_for(1, timeout=30)
        # 1. the vantage point loses its own connectivity: every path fails from it, no one is blamed
        vlink = f"m{env.lab.id}"
        subprocess.run(["ip", "-n", mlab.vantage_ns, "link", "set", vlink, "down"], check=True)
        await asyncio.sleep(4.0)
        assert requests.items == [], [(r.event.reason, r.event.evidence) for r in requests.items]  # type: ignore[attr-defined]
        assert env.lab.fib_next_hops(VIP) == both
        subprocess.run(["ip", "-n", mlab.vantage_ns, "link", "set", vlink, "up"], check=True)
        subprocess.run(["ip", "-n", mlab.vantage_ns, "route", "replace", "default", "via", "192.0.2.1"], check=True)
        async with asyncio.timeout(20):
            while not (statuses.items and statuses.items[-1].event.status is VipHealth.OK):  # type: ignore[attr-defined]
                await asyncio.sleep(0.1)
        # 2. the VIP fails through every node and there is no standby: nothing is withdrawn, a clear "down"
        n_status = len(statuses.items)
        mlab.blackhole(1)
        mlab.blackhole(2)
        await statuses.wait_for(n_status + 1, timeout=15)
        async with asyncio.timeout(15):
            while statuses.items[-1].event.status is not VipHealth.DOWN:  # type: ignore[attr-defined]
                await statuses.wait_for(len(statuses.items) + 1, timeout=15)
        down = statuses.items[-1].event
        assert isinstance(down, MonitorVipStatus) and "no healthy standby" in down.detail, down
        assert {e.node for e in down.evidence} >= {None, "n1", "n2"}
        await asyncio.sleep(3.0)
        assert requests.items == [], [(r.meta.time, r.event.reason, r.event.evidence) for r in requests.items]  # type: ignore[attr-defined]
        assert env.lab.fib_next_hops(VIP) == both  # the last announcements stay
    finally:
        mon.close()
        (tmp_path / "monitor-log.txt").write_text(mon.log.read_text(errors="replace")[-20000:])
