"""Typed state in JetStream KV buckets, and the level-triggered watch every service rebuilds from.

:meth:`KvStore.watch` yields a :class:`Snapshot` of every matching key first, then one
:class:`Change` per update. After a reconnect it starts over with a fresh :class:`Snapshot`, so a
consumer that simply replaces its view on each snapshot is never left with a stale state, whatever
happened while it was disconnected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import BaseModel, ValidationError

from vgw import metrics
from vgw.bus import Bus

log = logging.getLogger("vgw.store")

M = TypeVar("M", bound=BaseModel)


class RevisionMismatch(Exception):  # noqa: N818 - a named outcome of compare-and-set
    """A compare-and-set failed: the key is at another revision than expected."""

    def __init__(self, key: str, expected: int, current: int | None) -> None:
        super().__init__(f"{key}: expected revision {expected}, current is {current}")
        self.key = key
        self.expected = expected
        self.current = current


@dataclass(frozen=True, slots=True)
class Entry(Generic[M]):
    key: str
    value: M
    revision: int


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[M]):
    """The whole current state of the watched keys; replaces any earlier view."""

    entries: dict[str, Entry[M]]
    revision: int
    """The highest revision seen in the snapshot (0 if empty)."""


@dataclass(frozen=True, slots=True)
class Change(Generic[M]):
    """One key changed: ``entry`` is None when it was deleted or purged."""

    key: str
    entry: Entry[M] | None
    revision: int


WatchEvent = Snapshot[M] | Change[M]


class KvStore(Generic[M]):
    """A KV bucket whose values are JSON documents of one pydantic model."""

    def __init__(self, bus: Bus, bucket: str, model: type[M]) -> None:
        self._bus = bus
        self.bucket = bucket
        self.model = model
        self._kv: KeyValue | None = None
        self._kv_generation = -1

    @classmethod
    async def open(
        cls,
        bus: Bus,
        bucket: str,
        model: type[M],
        *,
        history: int = 1,
        ttl_s: float | None = None,
        create: bool = True,
        storage: api.StorageType = api.StorageType.FILE,
    ) -> KvStore[M]:
        """Bind to a bucket, creating it when missing and ``create`` is true."""
        store = cls(bus, bucket, model)
        try:
            store._kv = await bus.js.key_value(bucket)
        except (BucketNotFoundError, NotFoundError):
            if not create:
                raise
            config = api.KeyValueConfig(bucket=bucket, history=history, ttl=ttl_s, storage=storage)
            try:
                store._kv = await bus.js.create_key_value(config)
            except Exception:
                # Created concurrently by another process: bind to theirs.
                store._kv = await bus.js.key_value(bucket)
        store._kv_generation = bus.generation
        return store

    @classmethod
    async def attach(cls, bus: Bus, bucket: str, model: type[M], *, writer: str = "its writer") -> KvStore[M]:
        """Bind to a bucket another service owns, waiting (with progress) until that service created it.

        Readers never create: with the permission matrix only a bucket's writer may, and a reader's
        guess at its settings (history, TTL) would be wrong anyway.
        """
        delay, waited, last_log = 0.1, 0.0, -1e9
        while True:
            try:
                return await cls.open(bus, bucket, model, create=False)
            except (BucketNotFoundError, NotFoundError):
                pass
            if waited - last_log >= 5.0:
                log.info("waiting for KV bucket %s (created by %s); %.0fs so far", bucket, writer, waited)
                last_log = waited
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 2.0)

    async def _handle(self) -> KeyValue:
        if self._kv is None or self._kv_generation != self._bus.generation:
            self._kv = await self._bus.js.key_value(self.bucket)
            self._kv_generation = self._bus.generation
        return self._kv

    def _decode(self, key: str, raw: bytes | None, revision: int) -> Entry[M] | None:
        try:
            return Entry(key=key, value=self.model.model_validate_json(raw or b""), revision=revision)
        except ValidationError as exc:
            metrics.STORE_REJECTED.labels(self.bucket).inc()
            log.warning("%s/%s rev %d is not a valid %s: %s", self.bucket, key, revision, self.model.__name__, exc)
            return None

    @staticmethod
    def _encode(value: M) -> bytes:
        return value.model_dump_json().encode()

    async def get(self, key: str) -> Entry[M] | None:
        """The current entry, or None when absent, deleted or invalid."""
        kv = await self._handle()
        try:
            e = await kv.get(key)
        except KeyNotFoundError:
            return None
        if e.operation in (KV_DEL, KV_PURGE) or e.revision is None:
            return None
        return self._decode(key, e.value, e.revision)

    async def put(self, key: str, value: M) -> int:
        """Write unconditionally; returns the new revision."""
        kv = await self._handle()
        return int(await kv.put(key, self._encode(value)))

    async def create(self, key: str, value: M) -> int:
        """Write only if the key does not exist (or was deleted)."""
        kv = await self._handle()
        try:
            return int(await kv.create(key, self._encode(value)))
        except KeyWrongLastSequenceError as exc:
            current = await self.get(key)
            raise RevisionMismatch(key, 0, current.revision if current else None) from exc

    async def update(self, key: str, value: M, expected_revision: int) -> int:
        """Compare-and-set: write only if the key is still at ``expected_revision``."""
        kv = await self._handle()
        try:
            return int(await kv.update(key, self._encode(value), last=expected_revision))
        except KeyWrongLastSequenceError as exc:
            current = await self.get(key)
            raise RevisionMismatch(key, expected_revision, current.revision if current else None) from exc

    async def delete(self, key: str) -> None:
        kv = await self._handle()
        await kv.delete(key)

    async def snapshot(self, keys: str = ">") -> dict[str, M]:
        """The current value of every matching key, once (the first :meth:`watch` snapshot)."""
        async for ev in self.watch(keys):
            if isinstance(ev, Snapshot):
                return {k: e.value for k, e in ev.entries.items()}
        return {}

    async def watch(self, keys: str = ">", *, snapshot_timeout_s: float = 30.0) -> AsyncIterator[WatchEvent[M]]:
        """A :class:`Snapshot` of ``keys`` (a KV key pattern), then each :class:`Change`; a fresh
        snapshot after every reconnect. Runs until the consumer stops iterating."""
        first = True
        while True:
            generation = self._bus.generation
            try:
                kv = await self._handle()
                watcher = await kv.watch(keys)
            except Exception as exc:
                log.warning("watch %s/%s: %s; retrying", self.bucket, keys, exc)
                await asyncio.sleep(0.5)
                continue
            if not first:
                metrics.STORE_WATCH_RESTARTS.labels(self.bucket).inc()
            first = False
            reconnect = asyncio.ensure_future(self._bus.wait_reconnect(generation))
            try:
                entries: dict[str, Entry[M]] = {}
                top = 0
                async for change in self._follow(watcher, reconnect, snapshot_timeout_s):
                    if change is None:  # end of the initial values
                        yield Snapshot(entries=dict(entries), revision=top)
                        entries = {}
                        top = -1
                    elif top >= 0:
                        if change.entry is not None:
                            entries[change.key] = change.entry
                        top = max(top, change.revision)
                    else:
                        yield change
            finally:
                reconnect.cancel()
                try:
                    await watcher.stop()
                except Exception as exc:
                    log.debug("stopping watcher: %s", exc)

    async def _follow(
        self, watcher: KeyValue.KeyWatcher, reconnect: asyncio.Future[None], snapshot_timeout_s: float
    ) -> AsyncIterator[Change[M] | None]:
        """Changes from one watcher until a reconnect makes it stale. None marks the snapshot end."""
        initial = True
        while not reconnect.done():
            nxt = asyncio.ensure_future(watcher.updates(timeout=snapshot_timeout_s if initial else 3600.0))
            done, _ = await asyncio.wait({nxt, reconnect}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                return
            try:
                e = nxt.result()
            except NatsTimeoutError:
                if initial:  # the snapshot never completed: start over
                    log.warning("watch %s: no snapshot in %.0fs; rebuilding", self.bucket, snapshot_timeout_s)
                    return
                continue  # an idle bucket, nothing more
            except Exception as exc:  # a broken consumer: start over
                log.warning("watch %s: %s; rebuilding", self.bucket, exc or type(exc).__name__)
                return
            if e is None:
                initial = False
                yield None
                continue
            if e.operation in (KV_DEL, KV_PURGE) or e.revision is None:
                yield Change(key=e.key, entry=None, revision=e.revision or 0)
            else:
                entry = self._decode(e.key, e.value, e.revision)
                yield Change(key=e.key, entry=entry, revision=e.revision)
