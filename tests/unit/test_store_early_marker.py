"""The end of a watch's initial values, as KvStore decides it.

nats-py puts its end marker (None) when the watcher's consumer has nothing pending and the client
has handled nothing yet -- which is also the case while the server's deliveries are still in flight
to the client. A snapshot ended on that marker alone misses them: seen twice under load in this
project's tests (an empty snapshot of a bucket holding keys). The race depends on task scheduling,
so it is played here by a scripted watcher: the marker first, then the values the server says it
has already delivered (its consumer's delivered stream sequence)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from vgw.bus import Bus
from vgw.store import Change, KvStore


class Value(BaseModel):
    n: int


class ScriptedWatcher:
    """Hands out a fixed sequence of updates; its consumer says it delivered up to ``delivered``."""

    def __init__(self, updates: Sequence[KeyValue.Entry | None], delivered: int) -> None:
        self._updates = list(updates)
        info = SimpleNamespace(delivered=SimpleNamespace(stream_seq=delivered))

        async def consumer_info() -> Any:
            return info

        self._sub = SimpleNamespace(consumer_info=consumer_info)

    async def updates(self, timeout: float) -> KeyValue.Entry | None:
        if not self._updates:
            raise NatsTimeoutError
        return self._updates.pop(0)


def entry(key: str, n: int, revision: int) -> KeyValue.Entry:
    raw = Value(n=n).model_dump_json().encode()
    return KeyValue.Entry(bucket="b", key=key, value=raw, revision=revision, delta=0, created=None, operation=None)


async def follow(watcher: ScriptedWatcher, count: int) -> list[Change[Value] | None]:
    store = KvStore(cast(Bus, None), "b", Value)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    out: list[Change[Value] | None] = []
    async for item in store._follow(cast(KeyValue.KeyWatcher, watcher), never, 1.0):
        out.append(item)
        if len(out) == count:
            break
    return out


async def test_a_marker_ahead_of_delivered_values_waits_for_them() -> None:
    w = ScriptedWatcher([None, entry("a", 1, 1), entry("b", 2, 2), entry("a", 3, 3)], delivered=2)
    out = await follow(w, 4)
    keys = [None if c is None else c.key for c in out]
    # a and b are the initial values; the marker comes after them; a at 3 is a change
    assert keys == ["a", "b", None, "a"]


async def test_a_marker_after_every_delivered_value_ends_the_snapshot_at_once() -> None:
    w = ScriptedWatcher([entry("a", 1, 1), None, entry("b", 2, 2)], delivered=1)
    out = await follow(w, 3)
    assert [None if c is None else c.key for c in out] == ["a", None, "b"]


@pytest.mark.parametrize("delivered", [0, 1])
async def test_an_empty_bucket_ends_at_the_marker(delivered: int) -> None:
    w = ScriptedWatcher([None, entry("a", 1, 1)], delivered=delivered)
    out = await follow(w, 2)
    # delivered 0: nothing was sent, the marker is right; delivered 1: a is an initial value
    assert [None if c is None else c.key for c in out] == ([None, "a"] if delivered == 0 else ["a", None])
