"""The shim's long-running tasks are supervised (issue #18): a fault injected into each task kind is
counted in ``vgw_task_restarts_total{service="shim",task}``, turns readiness false while a required
task is down (the traffic writer is not required: readiness stays true), and the task recovers and
does its job again.

The shim runs in this process on the real runtime pieces (tests/support/inprocess.py) with a real
nats-server, the config committed through the config store, health in ``vgw_health``, and a real
vgw-fwd on ring vdevs, so the test can make one step of a task raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dataplane.shim.main import Shim, ShimSettings
from tests.forwarder.shimproc import wait_for
from tests.forwarder.test_shim_bursts import NODE, doc_text, entry
from tests.support.inprocess import Fault, fails_then_recovers, running, task_restarts
from tests.support.nats_server import NatsServer
from vgw.bus import Bus, Received
from vgw.config import ConfigDocument
from vgw.config.store import ConfigStore
from vgw.config.validate import load_document
from vgw.events import BackendState, DataplaneStatus
from vgw.fwdctl import FwdClient
from vgw.health import HEALTH_BUCKET, HealthEntry, health_key
from vgw.runtime import Runtime
from vgw.store import KvStore
from vgw.traffic import open_traffic

pytestmark = pytest.mark.integration

IPS = [f"198.18.{t}.{i}" for t in (1, 2) for i in range(1, 41)]


async def draining(sock: Path) -> set[str]:
    c = FwdClient(str(sock), timeout_s=5)
    try:
        text = await c.config()
    finally:
        await c.close()
    return {ln.split()[2] for ln in text.splitlines() if ln.startswith("backend ") and ln.endswith(" draining")}


@pytest.fixture
async def shim(
    ring_fwd: Path, nats_server: NatsServer, bus: Bus
) -> AsyncIterator[tuple[Shim, Runtime[ShimSettings], ConfigStore, KvStore[HealthEntry]]]:
    store = await ConfigStore(bus).open()
    await store.commit(load_document(doc_text()), actor="test", reason="shim supervision")
    hkv = await KvStore.open(bus, HEALTH_BUCKET, HealthEntry)
    for ip in IPS:
        await hkv.put(health_key(ip, 80, "hc"), entry(ip, BackendState.UP))
    settings = ShimSettings(
        node_id=NODE,
        fwd_socket=str(ring_fwd),
        nats_url=nats_server.url,
        instance_id="shim-supervision-test",
        status_interval_s=0.2,
    )
    app = Shim(settings)
    async with running("shim", app, settings) as rt:
        await wait_for(lambda: app.applied is not None, 20, "the initial full apply")
        yield app, rt, store, hkv


async def test_each_shim_task_recovers(
    ring_fwd: Path, bus: Bus, shim: tuple[Shim, Runtime[ShimSettings], ConfigStore, KvStore[HealthEntry]]
) -> None:
    app, rt, store, hkv = shim

    async def set_down(ip: str) -> None:
        await hkv.put(health_key(ip, 80, "hc"), entry(ip, BackendState.DOWN))

    # config: taking a revision fails; after the restart the watch starts from the current revision
    fault = Fault(app.on_config)
    app.on_config = fault  # type: ignore[method-assign]
    before = task_restarts("shim", "config")
    fault.armed = True
    raw = load_document(doc_text()).model_dump(mode="json", exclude_defaults=True)
    raw["vips"][0]["services"][0]["backends"][0]["weight"] = 7
    rev = (await store.commit(ConfigDocument.model_validate(raw), actor="test", reason="new weight")).revision
    await fails_then_recovers(rt, "config", fault, before)
    await wait_for(lambda: app.applied is not None and app.applied.config_revision == rev, 10, "the new revision")

    # health: taking a change fails; after the restart the watch starts from a snapshot that has it
    fault = Fault(app.on_health)
    app.on_health = fault  # type: ignore[method-assign]
    before = task_restarts("shim", "health")
    fault.armed = True
    await set_down(IPS[0])
    await fails_then_recovers(rt, "health", fault, before)
    await wait_for(lambda: draining(ring_fwd), 10, "the backend drained")
    assert await draining(ring_fwd) == {IPS[0]}

    # recompute: computing fails; the restarted loop computes at once
    fault = Fault(app._recompute)
    app._recompute = fault  # type: ignore[method-assign]
    before = task_restarts("shim", "recompute")
    fault.armed = True
    await set_down(IPS[1])
    await fails_then_recovers(rt, "recompute", fault, before)

    async def two_drained() -> bool:
        return await draining(ring_fwd) == {IPS[0], IPS[1]}

    await wait_for(two_drained, 10, "the second backend drained")

    # forwarder: a step of the loop fails (not the forwarder being away, which is handled in place)
    fault = Fault(app._check_forwarder)
    app._check_forwarder = fault  # type: ignore[method-assign]
    before = task_restarts("shim", "forwarder")
    fault.armed = True
    await fails_then_recovers(rt, "forwarder", fault, before)
    await set_down(IPS[2])

    async def three_drained() -> bool:
        return await draining(ring_fwd) == {IPS[0], IPS[1], IPS[2]}

    await wait_for(three_drained, 10, "the third backend drained")

    # status: publishing the heartbeat fails; afterwards heartbeats flow again
    seen: list[DataplaneStatus] = []

    async def on_status(r: Received) -> None:
        assert isinstance(r.event, DataplaneStatus)
        seen.append(r.event)

    sub = await bus.subscribe(on_status, subject=f"vgw.v1.dataplane.status.{NODE}", live=True)
    try:
        fault = Fault(app._publish_status)
        app._publish_status = fault  # type: ignore[method-assign]
        before = task_restarts("shim", "status")
        fault.armed = True
        await fails_then_recovers(rt, "status", fault, before)
        n = len(seen)
        await wait_for(lambda: len(seen) >= n + 2, 10, "heartbeats after the restart")
    finally:
        await sub.unsubscribe()

    # traffic (not required): writing the snapshot fails unexpectedly; readiness stays true
    traffic = await open_traffic(bus, create=False)
    fault = Fault(app.traffic_kv.put)
    app.traffic_kv.put = fault  # type: ignore[method-assign]
    before = task_restarts("shim", "traffic")
    fault.armed = True
    await fails_then_recovers(rt, "traffic", fault, before, required=False)
    first = await traffic.get(NODE)
    assert first is not None

    async def written_again() -> bool:
        e = await traffic.get(NODE)
        return e is not None and e.revision > first.revision

    await wait_for(written_again, 10, "a traffic snapshot after the restart")
    await asyncio.sleep(0)
