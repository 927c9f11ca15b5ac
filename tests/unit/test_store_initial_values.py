"""Where a KvStore watch's initial values end, with nats-py's end marker early or on time.

nats-py 2.x (``KeyValue.watch``) queues its end-of-initial-values marker (None) at once when, right
after subscribing, the consumer has nothing pending and the client has received nothing -- also
when the server has already sent every value and they are still on their way. The queue is then
[None, e1, ..., ek] with no second marker. Which one a real server produces depends on scheduling,
so each queue is played here by a scripted watcher; the integration test in
tests/integration/test_store.py runs the same watch against a real server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.kv import KV_DEL, KeyValue
from pydantic import BaseModel

from vgw.bus import Bus
from vgw.store import Change, InitialValues, KvStore, Snapshot, WatchEvent

PROMPT_S = 2.0
"""Every event here is due without waiting: the snapshot timeout (30 s) is far above this."""


class Value(BaseModel):
    n: int


def entry(key: str, revision: int, delta: int, op: str | None = None) -> KeyValue.Entry:
    raw = b"" if op else Value(n=revision).model_dump_json().encode()
    return KeyValue.Entry(bucket="b", key=key, value=raw, revision=revision, delta=delta, created=None, operation=op)


class ScriptedWatcher:
    """Hands out the queued updates, then waits for more; its consumer reports ``delivered`` and
    ``pending`` (or fails when ``info_fails``), like nats-py's ``watcher._sub.consumer_info()``."""

    def __init__(
        self, updates: Sequence[KeyValue.Entry | None], delivered: int = 0, pending: int = 0, info_fails: bool = False
    ) -> None:
        self.queue: asyncio.Queue[KeyValue.Entry | None] = asyncio.Queue()
        for u in updates:
            self.queue.put_nowait(u)
        self.info_calls = 0
        info = SimpleNamespace(delivered=SimpleNamespace(consumer_seq=delivered, stream_seq=0), num_pending=pending)

        async def consumer_info() -> Any:
            self.info_calls += 1
            if info_fails:
                raise NatsTimeoutError
            return info

        self._sub = SimpleNamespace(consumer_info=consumer_info)

    async def updates(self, timeout: float) -> KeyValue.Entry | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            raise NatsTimeoutError from None

    async def stop(self) -> None:
        pass


class ScriptedBus:
    """Just what KvStore.watch uses of a Bus: a generation that never moves, and a KV handle whose
    watch() hands out the given watchers in turn."""

    def __init__(self, *watchers: ScriptedWatcher) -> None:
        self.generation = 0
        self.watchers = list(watchers)
        self.watch_calls = 0
        self.js = SimpleNamespace(key_value=self._key_value)

    async def _key_value(self, bucket: str) -> Any:
        return SimpleNamespace(watch=self._watch)

    async def _watch(self, keys: str) -> ScriptedWatcher:
        self.watch_calls += 1
        return self.watchers.pop(0)

    async def wait_reconnect(self, generation: int) -> None:
        await asyncio.Event().wait()  # no reconnect in these tests


def watch(*watchers: ScriptedWatcher) -> AsyncIterator[WatchEvent[Value]]:
    store = KvStore(cast(Bus, ScriptedBus(*watchers)), "b", Value)
    return store.watch(">")


async def next_event(events: AsyncIterator[WatchEvent[Value]]) -> WatchEvent[Value]:
    async with asyncio.timeout(PROMPT_S):
        return await anext(events)


def keys(ev: WatchEvent[Value]) -> set[str]:
    assert isinstance(ev, Snapshot), ev
    return set(ev.entries)


async def test_values_in_flight_behind_an_early_marker_are_in_the_snapshot() -> None:
    w = ScriptedWatcher([None, entry("a", 1, delta=1), entry("b", 2, delta=0)], delivered=2, pending=0)
    events = watch(w)
    snap = await next_event(events)
    assert keys(snap) == {"a", "b"} and isinstance(snap, Snapshot) and snap.revision == 2
    w.queue.put_nowait(entry("c", 3, delta=0))
    later = await next_event(events)
    assert isinstance(later, Change) and later.key == "c"


async def test_an_early_marker_on_a_truly_empty_pattern_ends_the_snapshot_at_once() -> None:
    w = ScriptedWatcher([None], delivered=0, pending=0)
    events = watch(w)
    snap = await next_event(events)
    assert keys(snap) == set() and w.info_calls == 1
    w.queue.put_nowait(entry("a", 1, delta=0))
    later = await next_event(events)
    assert isinstance(later, Change) and later.key == "a" and later.entry is not None


async def test_a_marker_after_the_values_is_taken_as_it_is() -> None:
    w = ScriptedWatcher([entry("a", 1, delta=1), entry("b", 2, delta=0), None])
    events = watch(w)
    assert keys(await next_event(events)) == {"a", "b"}
    assert w.info_calls == 0  # the consumer is asked only when the marker may be early
    w.queue.put_nowait(entry("a", 3, delta=0))
    later = await next_event(events)
    assert isinstance(later, Change) and later.key == "a"


async def test_a_busy_bucket_ends_after_as_many_values_as_the_consumer_counted() -> None:
    # more writes keep coming, so no value has nothing pending after it: the count ends it,
    # a delete counting as one value
    w = ScriptedWatcher(
        [None, entry("a", 1, delta=5), entry("b", 2, delta=5, op=KV_DEL), entry("c", 3, delta=5), entry("d", 4, 5)],
        delivered=1,
        pending=2,
    )
    events = watch(w)
    assert keys(await next_event(events)) == {"a", "c"}
    later = await next_event(events)
    assert isinstance(later, Change) and later.key == "d"


async def test_an_unreadable_consumer_rebuilds_the_watch() -> None:
    broken = ScriptedWatcher([None, entry("a", 1, delta=0)], info_fails=True)
    fresh = ScriptedWatcher([entry("a", 1, delta=0), None])
    bus = ScriptedBus(broken, fresh)
    events = KvStore(cast(Bus, bus), "b", Value).watch(">")
    assert keys(await next_event(events)) == {"a"}
    assert bus.watch_calls == 2


@pytest.mark.parametrize(
    ("delivered", "pending", "deltas", "ends_after"),
    [
        (0, 0, [], 0),  # nothing sent, nothing due: empty now
        (2, 0, [1, 0], 2),  # both sent, still in flight: after the one with nothing pending
        (1, 1, [1, 0, 0], 2),  # one sent, one due: same
        (0, 1, [0], 1),  # written after subscribing: taken in (the snapshot is then a later state)
        (1, 2, [4, 4, 4, 4], 3),  # a busy bucket: after as many as counted
    ],
)
def test_initial_values_after_an_early_marker(delivered: int, pending: int, deltas: list[int], ends_after: int) -> None:
    values = InitialValues()
    assert values.marker_may_be_early()
    ended = [values.on_counts(delivered, pending)] + [values.on_entry(d) for d in deltas]
    assert ended.index(True) == ends_after and ended.count(True) == 1
    assert not values.on_marker()  # a later marker ends nothing more


def test_a_marker_after_a_value_ends_the_initial_values() -> None:
    values = InitialValues()
    assert not values.on_entry(1) and not values.on_entry(0)
    assert not values.marker_may_be_early()
    assert values.on_marker() and values.complete
    assert not values.on_marker() and not values.on_entry(0)
