"""Monitor leadership through the KV lease (vgw/lease.py), with two real monitors in this process on
a real nats-server: exactly one leads; the leader's wall clock an hour off changes nothing; a
partitioned leader (its connection silently cut by a proxy) stops acting within its lease, the other
takes over, carries on the requests in force read from KV and continues the rate limit's count; a
stale leader's write is refused; a restarted monitor reads the requests in force from KV, not from
the event stream."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.monitor.app import MonitorApp
from services.monitor.store import Fenced
from tests.integration.test_bus import Collector
from tests.monitor.inproc import VIP_A, VIP_B, FakeVantage, empty_netns, settings, two_vip_doc
from tests.monitor.monitorproc import MonitorProcess
from tests.monitor.proxy import CuttableProxy
from tests.routectl.harness import commit
from tests.support.inprocess import running
from tests.support.nats_server import NatsServer
from vgw.bus import EVENT_STREAM, Bus
from vgw.config.store import ConfigStore
from vgw.events import NodeWithdrawRequest, RequestAction
from vgw.lease import MONITOR_LEASE_BUCKET, LeaseRecord
from vgw.monitoring import MONITOR_BUCKET, VipView, view_key
from vgw.store import KvStore
from vgw.withdraw_requests import WITHDRAWALS_BUCKET, Withdrawal, entry_key, node_keys, read_in_force

pytestmark = pytest.mark.timeout(120)

LEASE_S = 2.0


async def until(pred: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)
    return time.monotonic() - start


async def always(pred: Callable[[], bool], for_s: float, what: str) -> None:
    """``pred`` holds at every look for ``for_s`` (an invariant watched over a window)."""
    end = time.monotonic() + for_s
    while time.monotonic() < end:
        assert pred(), what
        await asyncio.sleep(0.02)


def skewed(hours: float) -> Callable[[], datetime]:
    return lambda: datetime.now(UTC) + timedelta(hours=hours)


@dataclass
class World:
    nats: NatsServer
    bus: Bus
    netns: str
    requests: Collector


@pytest.fixture
async def world(nats_server: NatsServer, bus: Bus) -> AsyncIterator[World]:
    await commit(await ConfigStore(bus).open(), two_vip_doc())
    requests = Collector()
    await bus.subscribe(requests, types=[NodeWithdrawRequest])
    with empty_netns() as ns:
        yield World(nats_server, bus, ns, requests)


def withdraws(w: World, vip: str, by: str | None = None) -> list[NodeWithdrawRequest]:
    out = []
    for r in w.requests.items:
        ev = r.event
        if (
            isinstance(ev, NodeWithdrawRequest)
            and str(ev.vip) == vip
            and ev.action is RequestAction.WITHDRAW
            and (by is None or ev.requester == f"monitor/{by}")
        ):
            out.append(ev)
    return out


async def test_one_leader_skew_changes_nothing_a_partitioned_leader_hands_over(world: World, tmp_path: Path) -> None:
    w = world
    proxy = await CuttableProxy(w.nats.port).start()
    m1 = MonitorApp(settings(proxy.url, "m1", w.netns), wallclock=skewed(+1.0))  # an hour ahead
    m2 = MonitorApp(settings(w.nats.url, "m2", w.netns), wallclock=skewed(-0.5))  # half an hour behind
    try:
        async with running("monitor", m1, m1.s) as rt1:
            await until(lambda: m1.leading, 15, "m1 leads")
            async with running("monitor", m2, m2.s), FakeVantage(w.bus).running() as vp:
                # 1. exactly one leader, whatever the clocks say
                await always(lambda: m1.leading and not m2.leading, 2 * LEASE_S, "exactly one leader: m1")
                lease = await KvStore.open(w.bus, MONITOR_LEASE_BUCKET, LeaseRecord, create=False)
                held = await lease.get("holder")
                assert held is not None and held.value.holder == "m1"

                # 2. the skewed leader judges the other vantage point's observations as fresh, and acts
                vp.failing.add((VIP_A, "n1"))
                async with asyncio.timeout(15):
                    while not withdraws(w, VIP_A):
                        await asyncio.sleep(0.05)
                [req] = withdraws(w, VIP_A)
                assert req.node == "n1" and req.requester == "monitor/m1", req
                term1 = m1.lease.token if m1.lease else None
                stored = await read_in_force(w.bus, node_keys("n1"))
                assert stored is not None
                entry = stored[entry_key("node", "n1", VIP_A)]
                assert entry.request_id == req.request_id and entry.token == term1
                counted = await KvStore.open(w.bus, WITHDRAWALS_BUCKET, Withdrawal, create=False)
                assert req.request_id in {v.request_id for v in (await counted.snapshot()).values()}

                # 3. partition the leader: it stops acting within its lease, m2 takes over
                proxy.partition()
                cut = time.monotonic()
                await until(lambda: not m1.leading, LEASE_S + 2, "the partitioned leader steps down")
                lost_at = datetime.now(UTC)
                stepped_down = time.monotonic() - cut
                await until(lambda: m2.leading, 3 * LEASE_S + 2, "m2 takes over")
                took_over = time.monotonic() - cut
                assert stepped_down < took_over, "never two leaders: m1 stops before m2 starts"
                # m2 read the request in force from KV and keeps it (same request id, refreshed by m2)
                assert any(a.request_id == req.request_id for a in m2.judge.active.values())
                async with asyncio.timeout(10):
                    while not [e for e in withdraws(w, VIP_A, "m2") if e.request_id == req.request_id]:
                        await asyncio.sleep(0.05)

                # 4. the rate limit (1 a minute) continues: m2 sees VIP B's n1 fail and withdraws nothing
                vp.failing.add((VIP_B, "n1"))
                views = await KvStore.open(w.bus, MONITOR_BUCKET, VipView, create=False)

                async def b_judged() -> bool:
                    v = await views.get(view_key(VIP_B, 80))
                    return v is not None and v.value.leader == "m2" and v.value.nodes.get("n1") == "failing"

                async with asyncio.timeout(10):
                    while not await b_judged():
                        await asyncio.sleep(0.05)
                assert withdraws(w, VIP_B) == [], "the rate limit's count was lost with the leader"

                # 5. the old leader published nothing it decided after losing the lease
                from_m1 = [r for r in w.requests.items if r.event.requester == "monitor/m1"]  # type: ignore[attr-defined]
                assert all(r.meta.time is not None and r.meta.time <= lost_at for r in from_m1)

                # 6. healed, m1 finds the lease taken and follows; its stale write is refused
                proxy.heal()
                assert m1._bus is not None
                await until(lambda: m1._bus is not None and m1._bus.is_connected, 15, "m1 reconnects")
                await always(lambda: m2.leading and not m1.leading, 2 * LEASE_S, "m2 stays the only leader")
                assert m1._store is not None
                old = next(iter(m2.judge.active.values()))
                with pytest.raises(Fenced):
                    await m1._store.put_request(old, "monitor/m1", term1 or 0)
                held = await lease.get("holder")
                assert held is not None and held.value.holder == "m2"
                assert rt1.supervisor.readiness()[0]
                print(f"leadership: m1 stepped down {stepped_down:.2f}s, m2 led {took_over:.2f}s after the cut")
    finally:
        await proxy.close()


async def test_a_restarted_monitor_reads_the_requests_in_force_from_kv(world: World) -> None:
    w = world
    m1 = MonitorApp(settings(w.nats.url, "m1", w.netns))
    async with FakeVantage(w.bus).running() as vp:
        async with running("monitor", m1, m1.s):
            await until(lambda: m1.leading, 15, "m1 leads")
            vp.failing.add((VIP_A, "n1"))
            async with asyncio.timeout(15):
                while not withdraws(w, VIP_A):
                    await asyncio.sleep(0.05)
            # The leader publishes the event first and writes the request in force after it: stop
            # m1 only once the request is in KV (the level this test is about), not at the event.
            assert m1._store is not None
            async with asyncio.timeout(10):
                while not await m1._store.requests_in_force():
                    await asyncio.sleep(0.05)
        [req] = withdraws(w, VIP_A)
        # Nothing to replay: the event stream is emptied; the request in force lives in KV only.
        await w.bus.js.purge_stream(EVENT_STREAM)
        m3 = MonitorApp(settings(w.nats.url, "m3", w.netns))
        async with running("monitor", m3, m3.s):
            # m1 released its lease when it stopped: m3 leads without waiting for the TTL
            await until(lambda: m3.leading, LEASE_S + 2, "m3 leads")
            assert [a.request_id for a in m3.judge.active.values()] == [req.request_id]
            async with asyncio.timeout(10):
                while not [e for e in withdraws(w, VIP_A, "m3") if e.request_id == req.request_id]:
                    await asyncio.sleep(0.05)
            # repaired: m3 restores it after the hold-down and the entry leaves KV
            vp.failing.clear()
            async with asyncio.timeout(15):
                while not [
                    r
                    for r in w.requests.items
                    if r.event.action is RequestAction.RESTORE  # type: ignore[attr-defined]
                ]:
                    await asyncio.sleep(0.05)
            async with asyncio.timeout(5):
                while await read_in_force(w.bus, node_keys("n1")):
                    await asyncio.sleep(0.05)


async def test_a_paused_leader_process_publishes_nothing_when_it_resumes(world: World, tmp_path: Path) -> None:
    """Real processes: the leader is stopped (SIGSTOP) longer than its lease; the other takes over;
    resumed (SIGCONT), the old leader finds by its own monotonic clock that its lease is gone and
    publishes nothing -- not even the refresh that was due while it slept."""
    w = world
    env = {
        "VGW_MONITOR_STEER": "false", "VGW_MONITOR_NETNS": w.netns, "VGW_MONITOR_FAIL_AFTER": "2",
        "VGW_MONITOR_LEASE_S": str(LEASE_S), "VGW_MONITOR_REQUEST_TTL_S": "6", "VGW_MONITOR_JUDGE_INTERVAL_S": "0.1",
    }  # fmt: skip
    p1 = MonitorProcess(w.nats.url, "p1", tmp_path / "p1.log", env)
    p2: MonitorProcess | None = None
    try:
        async with FakeVantage(w.bus).running() as vp:
            vp.failing.add((VIP_A, "n1"))
            async with asyncio.timeout(20):
                while not withdraws(w, VIP_A, "p1"):
                    await asyncio.sleep(0.05)
            [req] = withdraws(w, VIP_A, "p1")
            p2 = MonitorProcess(w.nats.url, "p2", tmp_path / "p2.log", env)
            await until(lambda: "vgw_monitor_leader 0.0" in _metrics(p2), 20, "p2 up, following")
            p1.proc.send_signal(signal.SIGSTOP)
            paused_at = datetime.now(UTC)
            try:
                async with asyncio.timeout(3 * LEASE_S + 5):
                    while not [e for e in withdraws(w, VIP_A, "p2") if e.request_id == req.request_id]:
                        await asyncio.sleep(0.05)  # p2 leads and refreshes p1's request
            finally:
                p1.proc.send_signal(signal.SIGCONT)
            resumed_at = datetime.now(UTC)
            await until(lambda: "vgw_monitor_leader 0.0" in _metrics(p1), 10, "p1 answers, not leading")
            await always(lambda: "vgw_monitor_leader 1.0" in _metrics(p2), 1.0, "p2 stays the leader")
            late = [
                r for r in w.requests.items
                if r.event.requester == "monitor/p1" and r.meta.time is not None and r.meta.time > paused_at  # type: ignore[attr-defined]
            ]  # fmt: skip
            assert late == [], f"p1 published after it was paused ({resumed_at}): {late}"
    finally:
        p1.close()
        if p2 is not None:
            p2.close()


def _metrics(p: MonitorProcess) -> str:
    try:
        return p.metrics()
    except OSError:
        return ""
