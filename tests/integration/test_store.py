"""Typed KV store: compare-and-set, invalid values, and the snapshot-then-changes watch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest
from nats.js import api
from nats.js.errors import BucketNotFoundError
from prometheus_client import REGISTRY
from pydantic import BaseModel

from tests.support.nats_server import NatsServer
from vgw.bus import Bus
from vgw.store import Change, KvStore, RevisionMismatch, Snapshot, WatchEvent


class Doc(BaseModel):
    name: str
    weight: int = 1


class View:
    """What a level-triggered consumer keeps: replaced on each snapshot, patched on each change."""

    def __init__(self) -> None:
        self.state: dict[str, Doc] = {}
        self.snapshots = 0
        self.changed = asyncio.Event()

    async def follow(self, watch: AsyncIterator[WatchEvent[Doc]]) -> None:
        async for ev in watch:
            if isinstance(ev, Snapshot):
                self.state = {k: e.value for k, e in ev.entries.items()}
                self.snapshots += 1
            elif isinstance(ev, Change):
                if ev.entry is None:
                    self.state.pop(ev.key, None)
                else:
                    self.state[ev.key] = ev.entry.value
            self.changed.set()

    async def wait(self, predicate: object, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()


async def test_compare_and_set(bus: Bus) -> None:
    store = await KvStore.open(bus, "t_cas", Doc, history=5)
    rev1 = await store.create("a", Doc(name="a"))
    with pytest.raises(RevisionMismatch) as info:
        await store.create("a", Doc(name="again"))
    assert info.value.current == rev1
    rev2 = await store.update("a", Doc(name="a", weight=2), expected_revision=rev1)
    with pytest.raises(RevisionMismatch) as info:
        await store.update("a", Doc(name="stale"), expected_revision=rev1)
    assert (info.value.expected, info.value.current) == (rev1, rev2)
    got = await store.get("a")
    assert got is not None and got.value.weight == 2 and got.revision == rev2
    await store.delete("a")
    assert await store.get("a") is None
    assert await store.get("never") is None


async def test_invalid_values_are_counted_and_skipped(bus: Bus) -> None:
    store = await KvStore.open(bus, "t_invalid", Doc)
    kv = await bus.js.key_value("t_invalid")
    await kv.put("bad", b"{not json")
    before = REGISTRY.get_sample_value("vgw_store_rejected_values_total", {"bucket": "t_invalid"}) or 0
    assert await store.get("bad") is None
    after = REGISTRY.get_sample_value("vgw_store_rejected_values_total", {"bucket": "t_invalid"})
    assert after == before + 1


async def test_watch_yields_snapshot_then_changes(bus: Bus) -> None:
    store = await KvStore.open(bus, "t_watch", Doc)
    await store.put("a", Doc(name="a"))
    await store.put("b", Doc(name="b"))
    events: list[WatchEvent[Doc]] = []

    async def collect() -> None:
        async for ev in store.watch():
            events.append(ev)

    task = asyncio.create_task(collect())
    try:
        async with asyncio.timeout(10):
            while not events:
                await asyncio.sleep(0.02)
        snap = events[0]
        assert isinstance(snap, Snapshot) and set(snap.entries) == {"a", "b"}
        await store.put("c", Doc(name="c"))
        await store.delete("a")
        async with asyncio.timeout(10):
            while len(events) < 3:
                await asyncio.sleep(0.02)
        assert [(type(e).__name__, getattr(e, "key", None), getattr(e, "entry", 1) is None) for e in events[1:]] == [
            ("Change", "c", False),
            ("Change", "a", True),
        ]
    finally:
        task.cancel()


async def test_empty_bucket_snapshot(bus: Bus) -> None:
    store = await KvStore.open(bus, "t_empty", Doc)
    view = View()
    task = asyncio.create_task(view.follow(store.watch()))
    try:
        await view.wait(lambda: view.snapshots == 1)
        assert view.state == {}
        await store.put("x", Doc(name="x"))
        await view.wait(lambda: "x" in view.state)
    finally:
        task.cancel()


async def first_snapshot(store: KvStore[Doc], keys: str = ">") -> Snapshot[Doc]:
    """The first event of a fresh watch, which must be its snapshot; the watch is stopped after."""
    async with aclosing(store.watch(keys)) as events:
        ev = await anext(events)
    assert isinstance(ev, Snapshot), ev
    return ev


async def test_every_snapshot_of_a_full_bucket_holds_every_key(bus: Bus) -> None:
    # nats-py can end a watch's initial values before the ones the server has already sent
    # arrive (tests/unit/test_store_initial_values.py); a snapshot ended there is short. Many
    # watches, a few at a time, give that race its chances against a real server.
    store = await KvStore.open(bus, "t_snap_many", Doc)
    want = {f"k{i:02d}" for i in range(50)}
    for key in sorted(want):
        await store.put(key, Doc(name=key))
    short: list[int] = []
    async with asyncio.timeout(120):
        for _ in range(50):
            snaps = await asyncio.gather(*(first_snapshot(store) for _ in range(4)))
            short += [len(s.entries) for s in snaps if set(s.entries) != want]
    assert short == [], f"{len(short)} of 200 snapshots were short (their sizes: {short})"


async def test_a_one_key_watch_has_its_snapshot_promptly(bus: Bus) -> None:
    # the key's last revision is in the middle of the bucket's stream, as for a config key
    # among others written after it: its snapshot must not wait for the stream's later revisions
    store = await KvStore.open(bus, "t_snap_one", Doc)
    for i in range(50):
        await store.put(f"k{i:02d}", Doc(name=f"k{i:02d}"))
    await store.put("k07", Doc(name="k07", weight=7))
    for i in range(50, 60):
        await store.put(f"k{i:02d}", Doc(name=f"k{i:02d}"))
    for _ in range(10):
        start = time.monotonic()
        snap = await first_snapshot(store, "k07")
        took = time.monotonic() - start
        assert set(snap.entries) == {"k07"} and snap.entries["k07"].value.weight == 7
        assert took < 2.0, f"the one-key snapshot took {took:.1f}s"


async def test_a_memory_bucket_lost_with_a_nats_restart_is_created_again_by_its_writer(
    bus: Bus, nats_server: NatsServer
) -> None:
    """A one-server NATS restart loses memory buckets (the traffic and BGP-session views). Their
    writer creates them again at its next write; a store that only reads does not."""
    writer = await KvStore.open(bus, "mem_test", Doc, storage=api.StorageType.MEMORY)
    reader = await KvStore.open(bus, "mem_test", Doc, create=False)
    await writer.put("a", Doc(name="before"))
    generation = bus.generation
    nats_server.restart(kill=True)  # same port: the bus reconnects
    async with asyncio.timeout(20):
        while bus.generation == generation or not bus.is_connected:
            await asyncio.sleep(0.05)
    with pytest.raises(BucketNotFoundError):
        await reader.get("a")  # gone with the restart, and a reader does not create it
    await writer.put("a", Doc(name="after"))
    got = await reader.get("a")
    assert got is not None and got.value.name == "after"
    info = await bus.js.stream_info("KV_mem_test")
    assert info.config.storage == api.StorageType.MEMORY  # the same settings as at its first creation
