"""Typed state in JetStream KV buckets, and the level-triggered watch every service rebuilds from.

:meth:`KvStore.watch` yields a :class:`Snapshot` of every matching key first, then one
:class:`Change` per update. After a reconnect it starts over with a fresh :class:`Snapshot`, so a
consumer that simply replaces its view on each snapshot is never left with a stale state, whatever
happened while it was disconnected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import BaseModel, ValidationError

from vgw import jsreplicas, metrics
from vgw.bus import Bus
from vgw.jsretry import is_transient, retrying

log = logging.getLogger("vgw.store")

M = TypeVar("M", bound=BaseModel)


class StoreError(Exception):
    """A bucket cannot be created or bound (the message says why)."""


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
        # Set when this store created the bucket or may (its writer): how to create it again
        self._owned: api.KeyValueConfig | None = None

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
        """Bind to a bucket, creating it when missing and ``create`` is true (with the bus's
        ``js_replicas``); either way its replica count is checked against the wanted one."""
        store = cls(bus, bucket, model)
        if create:
            store._owned = api.KeyValueConfig(
                bucket=bucket, history=history, ttl=ttl_s, storage=storage, replicas=bus.js_replicas
            )
        await store._bind(rebind=False)
        await jsreplicas.check(bus.js, f"KV_{bucket}", bus.js_replicas, f"KV bucket {bucket}")
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

    async def _bind(self, *, rebind: bool) -> KeyValue:
        """Bind to the bucket on the current connection; a writer creates it when it is missing."""
        try:
            self._kv = await retrying("kv_bind", lambda: self._bus.js.key_value(self.bucket), what=self.bucket)
        except (BucketNotFoundError, NotFoundError):
            if self._owned is None:
                raise
            if rebind:
                # A restart of a one-server NATS loses memory buckets (traffic, BGP sessions): their
                # writer creates them again instead of failing every write until it restarts.
                log.warning(
                    "KV bucket %s is gone (memory storage on a restarted NATS?); creating it again", self.bucket
                )
            self._kv = await create_bucket(self._bus, self._owned)
        self._kv_generation = self._bus.generation
        return self._kv

    async def _handle(self) -> KeyValue:
        if self._kv is None or self._kv_generation != self._bus.generation:
            return await self._bind(rebind=True)
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

    async def _raw(self, key: str) -> KeyValue.Entry | None:
        """The current stored entry of ``key`` (None when absent), retried through an election."""

        async def get() -> KeyValue.Entry | None:
            kv = await self._handle()
            try:
                return await kv.get(key)
            except KeyNotFoundError:
                return None

        e = await retrying("kv_get", get, what=f"{self.bucket}/{key}")
        if e is None or e.operation in (KV_DEL, KV_PURGE) or e.revision is None:
            return None
        return e

    async def get(self, key: str) -> Entry[M] | None:
        """The current entry, or None when absent, deleted or invalid."""
        e = await self._raw(key)
        if e is None or e.revision is None:
            return None
        return self._decode(key, e.value, e.revision)

    async def put(self, key: str, value: M) -> int:
        """Write unconditionally; returns the new revision. Retried through an election: writing
        the same value twice leaves the same state."""
        data = self._encode(value)

        async def put() -> int:
            kv = await self._handle()
            return int(await kv.put(key, data))

        return await retrying("kv_put", put, what=f"{self.bucket}/{key}")

    async def create(self, key: str, value: M) -> int:
        """Write only if the key does not exist (or was deleted)."""
        return await self._cas(key, self._encode(value), 0)

    async def update(self, key: str, value: M, expected_revision: int) -> int:
        """Compare-and-set: write only if the key is still at ``expected_revision``."""
        return await self._cas(key, self._encode(value), expected_revision)

    async def _cas(self, key: str, data: bytes, expected: int) -> int:
        """Compare-and-set (``expected`` 0: create), retried through an election.

        A write whose answer was lost may have been stored: its retry then finds the key moved on
        and would report a conflict for our own write. So after a transient error, a key found
        holding exactly ``data`` counts as our write having landed, and its revision is returned.
        """
        retried = False

        async def write() -> int:
            nonlocal retried
            kv = await self._handle()
            try:
                if expected == 0:
                    return int(await kv.create(key, data))
                return int(await kv.update(key, data, last=expected))
            except Exception as exc:
                retried = retried or is_transient(exc)
                raise

        try:
            return await retrying("kv_cas", write, what=f"{self.bucket}/{key}")
        except KeyWrongLastSequenceError as exc:
            current = await self._raw(key)
            if retried and current is not None and current.value == data and current.revision is not None:
                log.info("%s/%s: the write whose answer was lost was stored (revision %d)", self.bucket, key,
                         current.revision)  # fmt: skip
                return int(current.revision)
            raise RevisionMismatch(key, expected, current.revision if current else None) from exc

    async def delete(self, key: str) -> None:
        async def delete() -> None:
            kv = await self._handle()
            await kv.delete(key)

        await retrying("kv_delete", delete, what=f"{self.bucket}/{key}")

    async def snapshot(self, keys: str = ">") -> dict[str, M]:
        """The current value of every matching key, once (the first :meth:`watch` snapshot)."""
        async for ev in self.watch(keys):
            if isinstance(ev, Snapshot):
                return {k: e.value for k, e in ev.entries.items()}
        return {}

    async def watch(self, keys: str = ">", *, snapshot_timeout_s: float = 30.0) -> AsyncGenerator[WatchEvent[M], None]:
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
        """Changes from one watcher until a reconnect makes it stale. None marks the snapshot end
        (where :class:`InitialValues` puts it, not always where nats-py does)."""
        initial = InitialValues()
        queued = _queue_of(watcher)
        while not reconnect.done():
            try:
                if queued is not None and not queued.empty():
                    # a burst: take what has arrived without a task and a wait per entry (that cost
                    # dominated a consumer's CPU when a thousand health entries changed at once)
                    e = queued.get_nowait()
                else:
                    e = await self._next(watcher, reconnect, 3600.0 if initial.complete else snapshot_timeout_s)
                    if e is _RECONNECTED:
                        return
            except NatsTimeoutError:
                if not initial.complete:  # the snapshot never completed: start over
                    log.warning("watch %s: no snapshot in %.0fs; rebuilding", self.bucket, snapshot_timeout_s)
                    return
                continue  # an idle bucket, nothing more
            except Exception as exc:  # a broken consumer: start over
                log.warning("watch %s: %s; rebuilding", self.bucket, exc or type(exc).__name__)
                return
            if e is None:
                if not initial.marker_may_be_early():
                    ended = initial.on_marker()
                else:
                    try:
                        delivered, pending = await _consumer_counts(watcher)
                    except Exception as exc:  # without the counts the end is unknown: start over
                        log.warning("watch %s: consumer info: %s; rebuilding", self.bucket, exc or type(exc).__name__)
                        return
                    log.debug("watch %s: early end marker; %d sent, %d pending", self.bucket, delivered, pending)
                    ended = initial.on_counts(delivered, pending)
                if ended:
                    yield None
                continue
            yield self._change(e)
            if initial.on_entry(e.delta):
                yield None

    @staticmethod
    async def _next(watcher: KeyValue.KeyWatcher, reconnect: asyncio.Future[None], timeout_s: float) -> Any:
        nxt = asyncio.ensure_future(watcher.updates(timeout=timeout_s))
        done, _ = await asyncio.wait({nxt, reconnect}, return_when=asyncio.FIRST_COMPLETED)
        if nxt not in done:
            nxt.cancel()
            return _RECONNECTED
        return nxt.result()

    def _change(self, e: KeyValue.Entry) -> Change[M]:
        if e.operation in (KV_DEL, KV_PURGE) or e.revision is None:
            return Change(key=e.key, entry=None, revision=e.revision or 0)
        return Change(key=e.key, entry=self._decode(e.key, e.value, e.revision), revision=e.revision)


_RECONNECTED = object()


def _queue_of(watcher: KeyValue.KeyWatcher) -> asyncio.Queue[Any] | None:
    """nats-py's queue of delivered entries (private; None if a release renames it: the slow path
    then serves every entry)."""
    q = getattr(watcher, "_updates", None)
    return q if isinstance(q, asyncio.Queue) else None


class InitialValues:
    """Where one watcher's initial values end, i.e. when its :class:`Snapshot` is complete.

    nats-py (2.x, ``KeyValue.watch``) marks that end with None, normally right after the first
    value the server sent with nothing pending behind it. But when, right after subscribing, the
    consumer has nothing pending and the client has received nothing yet, it queues the marker at
    once -- also when the server has already sent every value (sent counts as no longer pending)
    and they are still on their way: the queue is then [None, v1, ..., vk] with no second marker,
    and a snapshot taken at the marker would show a full bucket as empty.

    So a marker before any value is checked against the consumer's own counts, read after
    subscribing: its initial values are the first ``delivered + pending`` messages it sends
    (delivered counts what it has sent, pending what it still has to: together at least every
    value it started with). When that is 0 the pattern is truly empty and the marker is right.
    Otherwise they end at the first value with nothing pending behind it (``delta`` 0: every
    earlier one has been sent) or once that many values (deletes included) came, whichever is
    first; the count bounds a busy bucket where ``delta`` may not drop to 0 for a while. Either
    end is a state the pattern really had, so the snapshot is never partial. A later marker ends
    nothing more.

    Pure bookkeeping, no I/O, so the rule is tested without a server.
    """

    def __init__(self) -> None:
        self.complete = False
        self._received = 0
        self._due: int | None = None  # set by an early marker: how many values the initial ones are

    def marker_may_be_early(self) -> bool:
        """True when nats-py's marker, arriving now, may be early: then :meth:`on_counts` decides."""
        return not self.complete and self._due is None and self._received == 0

    def on_marker(self) -> bool:
        """A marker after at least one value (or after the end): True when it ends the initial values."""
        if self.complete or self._due is not None:
            return False
        self.complete = True
        return True

    def on_counts(self, delivered: int, pending: int) -> bool:
        """The consumer's counts after an early marker: True when the initial values end right here."""
        self._due = delivered + pending
        self.complete = self._due == 0
        return self.complete

    def on_entry(self, delta: int | None) -> bool:
        """One value (or delete) arrived, ``delta`` messages pending behind it: True when it is the
        last of the initial values."""
        if self.complete:
            return False
        self._received += 1
        if self._due is None:  # the end is nats-py's marker
            return False
        self.complete = delta == 0 or self._received >= self._due
        return self.complete


async def _consumer_counts(watcher: KeyValue.KeyWatcher) -> tuple[int, int]:
    """How many messages the watcher's consumer has sent and still has pending, from the server."""
    # nats-py keeps the watcher's subscription private; its consumer_info is the only place the
    # server says how many initial values it has already sent (see InitialValues).
    sub = watcher._sub
    if sub is None:  # set by KeyValue.watch before it returns the watcher
        raise RuntimeError("the watcher has no subscription")
    info = await sub.consumer_info()
    delivered = info.delivered.consumer_seq if info.delivered is not None else 0
    return int(delivered or 0), int(info.num_pending or 0)


async def create_bucket(bus: Bus, config: api.KeyValueConfig) -> KeyValue:
    """Create a KV bucket (retried through an election), or bind to it when another process created
    it first. A bucket that can be neither created nor bound raises :class:`StoreError` naming why
    (e.g. more replicas than the cluster has servers)."""
    bucket = str(config.bucket)
    try:
        return await retrying("kv_create", lambda: bus.js.create_key_value(config), what=bucket)
    except Exception as exc:
        try:
            return await bus.js.key_value(bucket)
        except (BucketNotFoundError, NotFoundError):
            raise StoreError(
                f"cannot create KV bucket {bucket} with {config.replicas} replica(s): {exc or type(exc).__name__}"
            ) from exc
