"""Killing and restarting nats-server: the bus reconnects, the KV watch rebuilds the full state,
and a live subscriber loses nothing published after the restart (nor while NATS was down)."""

from __future__ import annotations

import asyncio

from tests.integration.test_bus import Collector, status
from tests.integration.test_store import Doc, View
from tests.support.nats_server import NatsServer
from vgw.bus import Bus
from vgw.events import ConfigChanged, DataplaneStatus
from vgw.store import KvStore


async def _wait_connected(bus: Bus, generation: int, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        await bus.wait_reconnect(generation)


async def test_restart_nats_keeps_state_and_events(bus: Bus, nats_server: NatsServer) -> None:
    publisher = Bus({"servers": [nats_server.url], "reconnect_time_wait": 0.2}, source="/vgw/tests/pub")
    await publisher.connect()
    try:
        store = await KvStore.open(bus, "t_restart", Doc)
        for name in ("a", "b", "c"):
            await store.put(name, Doc(name=name))
        view = View()
        watch_task = asyncio.create_task(view.follow(store.watch()))
        got = Collector()
        await bus.subscribe(got, types=[DataplaneStatus])
        # A subscriber that has handled nothing yet when NATS goes away must not miss anything either.
        late = Collector()
        await bus.subscribe(late, types=[ConfigChanged])
        await view.wait(lambda: set(view.state) == {"a", "b", "c"})
        await publisher.publish(status(0))
        await got.wait_for(1)

        gens = (bus.generation, publisher.generation)
        nats_server.stop(kill=True)
        # Published while NATS is down: buffered by the client, flushed on reconnect.
        for i in range(1, 4):
            await publisher.publish(status(i))
        nats_server.start()
        await _wait_connected(publisher, gens[1])
        # Published right after the publisher is back, whether or not the subscriber is yet.
        for i in range(4, 54):
            await publisher.publish(status(i))
        for rev in (1, 2, 3):
            await publisher.publish(ConfigChanged(revision=rev, action="apply", actor="test"))
        other_store = await KvStore.open(publisher, "t_restart", Doc)
        await other_store.put("d", Doc(name="d"))
        await other_store.delete("a")

        await _wait_connected(bus, gens[0])
        items = await got.wait_for(54, timeout=20)
        seqs = [r.event.seq for r in items]  # type: ignore[attr-defined]
        assert seqs == list(range(54)), f"lost or duplicated: {sorted(set(range(54)) ^ set(seqs))}"
        assert [r.event.revision for r in await late.wait_for(3)] == [1, 2, 3]  # type: ignore[attr-defined]
        await view.wait(lambda: set(view.state) == {"b", "c", "d"}, timeout=20)
        assert view.snapshots >= 2  # the watch rebuilt from a fresh snapshot after the restart
        watch_task.cancel()
    finally:
        await publisher.close()
