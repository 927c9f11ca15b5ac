"""Live healthcheck instances, for sharding: heartbeats in a KV bucket, watched by everyone.

Each instance puts its key every heartbeat. Everyone watches the bucket and takes a member for dead
when its heartbeat has not been seen for ``dead_after`` heartbeats (2.5 by default), so a killed
instance's checks move within 3 heartbeat periods. The bucket's TTL only cleans up dead keys; it is
not what detects death (nats-server 2.9 sends no delete marker when a key expires). A stopping
instance deletes its key, so its checks move at once. The heartbeat and the watch are supervised
tasks: one that fails is restarted, and a restarted watch starts again from a snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import nats.errors
from pydantic import BaseModel

from vgw.bus import Bus
from vgw.store import Change, KvStore, Snapshot
from vgw.supervise import Supervisor

log = logging.getLogger("vgw.healthcheck.membership")

# How long a stopping instance tries to remove its member key (the others then take its share at
# once, instead of after its heartbeat times out).
LEAVE_TIMEOUT_S = 2.0


class Member(BaseModel):
    instance: str
    started_at: datetime
    heartbeat_at: datetime


class Membership:
    def __init__(
        self,
        bus: Bus,
        instance: str,
        bucket: str,
        heartbeat_s: float,
        on_change: Callable[[frozenset[str]], None],
        dead_after: float = 2.5,
        *,
        supervisor: Supervisor,
    ) -> None:
        self._supervisor = supervisor
        self._bus = bus
        self.instance = instance
        self._bucket = bucket
        self._hb = heartbeat_s
        self._dead_after_s = dead_after * heartbeat_s
        self._on_change = on_change
        self._seen: dict[str, float] = {}
        self._store: KvStore[Member] | None = None
        self._started = datetime.now(UTC)
        self.live: frozenset[str] = frozenset({instance})
        self._running = False

    async def start(self) -> None:
        self._store = await KvStore.open(self._bus, self._bucket, Member, ttl_s=max(3 * self._hb, 1.0))
        await self._beat()
        self._supervisor.spawn("membership-heartbeat", self._heartbeat)
        self._supervisor.spawn("membership-watch", self._watch)
        self._running = True

    async def _beat(self) -> None:
        assert self._store is not None
        now = datetime.now(UTC)
        await self._store.put(self.instance, Member(instance=self.instance, started_at=self._started, heartbeat_at=now))

    async def _heartbeat(self) -> None:
        # Evaluate four times per heartbeat so a death is noticed soon after dead_after.
        tick = 0
        while True:
            await asyncio.sleep(self._hb / 4)
            tick += 1
            if tick % 4 == 0:
                try:
                    await self._beat()
                except (nats.errors.Error, TimeoutError, OSError) as exc:  # NATS away: keep checking (fail static)
                    log.warning("membership heartbeat failed: %s", exc)
            self._evaluate()

    async def _watch(self) -> None:
        assert self._store is not None
        async for ev in self._store.watch():
            now = time.monotonic()
            if isinstance(ev, Snapshot):
                wall = datetime.now(UTC)
                self._seen = {
                    k: now - max(0.0, (wall - e.value.heartbeat_at).total_seconds()) for k, e in ev.entries.items()
                }
            elif isinstance(ev, Change):
                if ev.entry is None:
                    self._seen.pop(ev.key, None)
                else:
                    self._seen[ev.key] = now
            self._evaluate()

    def _evaluate(self) -> None:
        now = time.monotonic()
        live = frozenset({m for m, t in self._seen.items() if now - t < self._dead_after_s} | {self.instance})
        if live != self.live:
            log.info("healthcheck members now %s", sorted(live))
            self.live = live
            self._on_change(live)

    async def stop(self) -> None:
        if self._running:
            await self._supervisor.stop("membership-heartbeat", "membership-watch")
        if self._store is not None:
            try:
                # bounded: with NATS away the store would retry until the shutdown timeout
                async with asyncio.timeout(LEAVE_TIMEOUT_S):
                    await self._store.delete(self.instance)
            except Exception as exc:  # leaving is a courtesy: the others time us out anyway
                log.warning("could not leave membership: %s", exc or type(exc).__name__)
