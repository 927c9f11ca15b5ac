"""Each long-running task of the checker, failing once, is restarted, counted and reported to
readiness, and does its job again afterwards. Real nats-server and real backends; the failure is
injected by making the task's dependency raise once (an unexpected error, not NATS trouble, which
the tasks handle themselves)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from services.healthcheck.checker import HealthChecker
from services.healthcheck.membership import Member
from tests.integration.test_bus import Collector
from tests.support.backends import TcpBackend
from vgw.bus import Bus
from vgw.config import ConfigDocument
from vgw.events import BackendDown, BackendUp
from vgw.health import HEALTH_BUCKET, HealthEntry
from vgw.store import KvStore, Snapshot, WatchEvent
from vgw.supervise import Supervisor
from vgw.telemetry.endpoint import Health

from .helpers import Feed, document, service, tcp_check

BACKOFF_S = 0.3  # long enough for the test to see readiness fail while the task is down


class InjectedError(RuntimeError):
    """The failure these tests inject."""


async def until(cond: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def until_async(cond: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def raise_once(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, except that its first call raises :class:`InjectedError`."""
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise InjectedError(f"injected failure in {getattr(fn, '__name__', fn)}")
        return fn(*args, **kwargs)

    return wrapper


def async_raise_once(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    calls = 0

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise InjectedError(f"injected failure in {getattr(fn, '__name__', fn)}")
        return await fn(*args, **kwargs)

    return wrapper


def break_watch_once(monkeypatch: pytest.MonkeyPatch, bucket: str) -> None:
    """The first watch of ``bucket`` delivers its snapshot, then raises (later watches are real)."""
    real = KvStore.watch
    broken = False

    async def snapshot_then_fail(gen: AsyncGenerator[WatchEvent[Any], None]) -> AsyncIterator[WatchEvent[Any]]:
        try:
            async for ev in gen:
                yield ev
                if isinstance(ev, Snapshot):
                    break
        finally:
            await gen.aclose()
        raise InjectedError(f"injected: watch of {bucket} broke")

    def watch(self: KvStore[Any], *args: Any, **kwargs: Any) -> AsyncIterator[WatchEvent[Any]]:
        nonlocal broken
        if self.bucket != bucket or broken:
            return real(self, *args, **kwargs)
        broken = True
        return snapshot_then_fail(real(self, *args, **kwargs))

    monkeypatch.setattr(KvStore, "watch", watch)


class Harness:
    def __init__(self, bus: Bus, feed: Any = None) -> None:
        self.health = Health()
        self.health.set_started()
        self.supervisor = Supervisor(f"hc-sv-{uuid.uuid4().hex[:6]}", self.health, backoff_initial_s=BACKOFF_S)
        self.feed = feed if feed is not None else Feed()
        self.instance = f"hc-{uuid.uuid4().hex[:8]}"
        self.checker = HealthChecker(bus, self.instance, self.feed, heartbeat_s=0.5, supervisor=self.supervisor)

    def ready(self) -> bool:
        return self.health.readiness()[0]

    async def sees_restart(self, task: str) -> None:
        """Readiness turns false, naming the task, while it is down; then it is back, counted."""

        def down() -> bool:
            ok, report = self.health.readiness()
            return not ok and task in report.get("tasks", "")

        await until(down, f"/readyz to report {task} down")
        await until(lambda: self.supervisor.is_up(task) and self.ready(), f"{task} to be restarted")
        assert self.supervisor.restarts(task) == 1

    async def stop(self) -> None:
        await self.checker.stop()
        await self.supervisor.stop()


async def test_scheduler_restarts_and_keeps_probing(bus: Bus) -> None:
    backend = await TcpBackend().start()
    h = Harness(bus)
    await h.checker.start()
    try:
        h.feed.push(document([tcp_check(interval=0.1)], [service("web", 80, [("127.0.0.1", backend.port)])]))
        await until(lambda: h.checker.scheduler.jobs, "the job")
        [job] = h.checker.scheduler.jobs.values()
        await until(lambda: backend.connections >= 2, "probes")
        job.prober.start = raise_once(job.prober.start)  # type: ignore[method-assign]
        await h.sees_restart("scheduler")
        seen = backend.connections
        # the job whose start failed was planned again from the jobs: probing goes on
        await until(lambda: backend.connections >= seen + 3, "probes after the restart")
    finally:
        await h.stop()
        await backend.stop()


async def test_config_follower_restarts_and_applies_new_revisions(bus: Bus) -> None:
    a, b = await TcpBackend().start(), await TcpBackend().start()
    events = Collector()
    await bus.subscribe(events, types=[BackendUp, BackendDown])

    class FlakyFeed(Feed):
        """Its second read fails once, as a config watch with a broken document would."""

        def __init__(self) -> None:
            super().__init__()
            self.reads = 0

        async def __call__(self) -> AsyncIterator[tuple[int, ConfigDocument]]:
            while True:
                item = await self.queue.get()
                self.reads += 1
                if self.reads == 2:
                    raise InjectedError("injected: config watch broke")
                yield item

    feed = FlakyFeed()
    h = Harness(bus, feed)
    await h.checker.start()
    try:
        check = [tcp_check(interval=0.2)]
        feed.push(document(check, [service("web", 80, [("127.0.0.1", a.port)])]))
        await events.wait_for(1)
        feed.push(document(check, [service("web", 80, [("127.0.0.1", a.port)])]))  # this read fails
        await h.sees_restart("config")
        feed.push(document(check, [service("web", 80, [("127.0.0.1", a.port), ("127.0.0.1", b.port)])]))
        items = await events.wait_for(2)
        up = items[1].event
        assert isinstance(up, BackendUp) and up.backend.port == b.port
        assert h.checker.revision == feed.revision
    finally:
        await h.stop()
        await a.stop()
        await b.stop()


async def test_health_writer_restarts_and_stores_what_was_left(bus: Bus) -> None:
    backend = await TcpBackend().start()
    h = Harness(bus)
    await h.checker.start()
    store = await KvStore.open(bus, HEALTH_BUCKET, HealthEntry)
    key = f"127-0-0-1_{backend.port}.tcp"
    try:
        health = h.checker._health
        assert health is not None
        # Not NATS trouble (which the writer retries itself) but e.g. an entry that cannot be encoded.
        health.put = async_raise_once(health.put)  # type: ignore[method-assign,assignment]
        h.feed.push(document([tcp_check()], [service("web", 80, [("127.0.0.1", backend.port)])]))
        await h.sees_restart("health-writer")

        async def stored() -> bool:
            e = await store.get(key)
            return e is not None and e.value.state == "up"

        await until_async(stored, "the up state stored after the restart")
    finally:
        await h.stop()
        await backend.stop()


async def test_health_mirror_restarts_from_a_new_snapshot(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    break_watch_once(monkeypatch, HEALTH_BUCKET)
    h = Harness(bus)
    await h.checker.start()
    store = await KvStore.open(bus, HEALTH_BUCKET, HealthEntry)
    try:
        await h.sees_restart("health-mirror")
        key = f"192-0-2-{uuid.uuid4().int % 200 + 1}_80.tcp"
        entry = HealthEntry.model_validate(
            {
                "address": "192.0.2.1",
                "port": 80,
                "check": "tcp",
                "kind": "tcp",
                "state": "down",
                "reason": "refused",
                "since": datetime.now(UTC),
                "checker": "elsewhere",
            }
        )
        await store.put(key, entry)
        await until(lambda: key in h.checker._known, "the mirror to see a new entry")
    finally:
        await h.stop()


async def test_membership_heartbeat_restarts_and_beats_again(bus: Bus) -> None:
    h = Harness(bus)
    await h.checker.start()
    members = await KvStore.open(bus, "vgw_hc_members", Member)
    try:
        m = h.checker.membership
        m._beat = async_raise_once(m._beat)  # type: ignore[method-assign,assignment]
        await h.sees_restart("membership-heartbeat")
        after = datetime.now(UTC)

        async def beat_since() -> bool:
            e = await members.get(h.instance)
            return e is not None and e.value.heartbeat_at > after

        await until_async(beat_since, "a heartbeat after the restart")
    finally:
        await h.stop()


async def test_membership_watch_restarts_and_sees_members(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    break_watch_once(monkeypatch, "vgw_hc_members")
    h = Harness(bus)
    await h.checker.start()
    members = await KvStore.open(bus, "vgw_hc_members", Member)
    other = f"hc-other-{uuid.uuid4().hex[:6]}"
    try:
        await h.sees_restart("membership-watch")
        now = datetime.now(UTC)
        await members.put(other, Member(instance=other, started_at=now, heartbeat_at=now))
        await until(lambda: other in h.checker.membership.live, "the watch to see another member")
    finally:
        await members.delete(other)
        await h.stop()
