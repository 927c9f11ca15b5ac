"""The event bus: a NATS connection that publishes and consumes VGW events.

Publishing writes CloudEvents 1.0 binary-mode messages with the producer's trace context. Every
``vgw.v1.>`` subject is captured by the JetStream stream ``VGW_EVENTS`` (bounded by age and bytes),
which lets consumers replay and lets plain subscribers survive a NATS restart without a gap:

* A subscription without a queue group reads the stream through an ordered consumer, remembers the
  last stream sequence it handled, and after a reconnect resumes right after it. Nothing published
  while it was away is lost, and nothing is handled twice.
* A subscription with a queue group shares the work with the group's other members over core NATS;
  across a reconnect it may miss events, which is fine because consumers rebuild from KV (state is
  level, events are edges).

A malformed, unknown or invalid message is counted in ``vgw_bus_rejected_messages_total{reason}``,
logged and skipped. A handler that raises is counted and logged. Neither stops the subscription.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import AuthorizationError
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from vgw import jsreplicas, metrics
from vgw.events import SUBJECT_ROOT, CloudEventMeta, Event, Rejected, decode, encode
from vgw.jsretry import retrying
from vgw.telemetry.messaging import consumer_span, producer_span

log = logging.getLogger("vgw.bus")

EVENT_STREAM = "VGW_EVENTS"
EVENT_SUBJECTS = f"{SUBJECT_ROOT}.>"
DUPLICATE_WINDOW_S = 120.0
# A replaying subscription's consumer lives on one server; the client re-creates it after two
# missed idle heartbeats. nats-py's default (5 s) left subscribers deaf for 10-20 s after that
# server died; 2 s costs one small message per idle consumer every 2 s.
REPLAY_IDLE_HEARTBEAT_S = 2.0
"""A publish retried with the same Nats-Msg-Id within this window is stored once."""
_LOG_EVERY_S = 5.0  # at most one log line per rejection reason this often; the counter counts all


@dataclass(frozen=True, slots=True)
class Received:
    """An event delivered to a handler, with its CloudEvents attributes."""

    subject: str
    meta: CloudEventMeta
    event: Event
    stream_seq: int | None = None
    """Sequence in the event stream, when delivered from it."""


Handler = Callable[[Received], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Pending:
    subject: str
    headers: dict[str, str]
    body: bytes
    type: str


class BusError(Exception):
    pass


class _RateLimitedLog:
    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= _LOG_EVERY_S:
            skipped = self._suppressed.pop(key, 0)
            suffix = f" ({skipped} similar suppressed)" if skipped else ""
            log.warning(msg + suffix, *args)
            self._last[key] = now
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1


_reject_log = _RateLimitedLog()


class Subscription:
    """A subscription to one or more subjects, resumable across reconnects when stream-backed."""

    def __init__(
        self,
        bus: Bus,
        subjects: list[str],
        handler: Handler,
        queue: str | None,
        since: datetime | None,
    ) -> None:
        self._bus = bus
        self._subjects = subjects
        self._handler = handler
        self._queue = queue
        self._since = since
        self._subs: dict[str, NatsSubscription | JetStreamContext.PushSubscription] = {}
        self._last_seq: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def stream_backed(self) -> bool:
        return self._queue is None

    @property
    def subjects(self) -> list[str]:
        return list(self._subjects)

    async def _start(self) -> None:
        async with self._lock:
            if self.stream_backed:
                # Start at a stream sequence, a position we can resume from: a subscriber cut off
                # before its first event still gets what was published meanwhile. Never by start time:
                # nats-py re-creates an ordered consumer whose server went away (a NATS cluster losing
                # a server) by start *sequence* but keeps the start time in its request, which the
                # server refuses (err 10094) every time -- the subscription would be dead for good.
                if self._since is None:
                    last = (await self._bus.js.stream_info(EVENT_STREAM)).state.last_seq
                else:
                    last = await self._bus._seq_before(self._since)
                self._last_seq = {subject: last for subject in self._subjects}
            for subject in self._subjects:
                await self._start_one(subject)

    async def _start_one(self, subject: str) -> None:
        nc = self._bus.nc

        async def on_msg(msg: Msg) -> None:
            await self._on_msg(subject, msg)

        if not self.stream_backed:
            self._subs[subject] = await nc.subscribe(subject, queue=self._queue or "", cb=on_msg)
            return
        last = self._last_seq.get(subject, 0)
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=last + 1, filter_subject=subject
        )
        self._subs[subject] = await self._bus.js.subscribe(
            subject,
            stream=EVENT_STREAM,
            cb=on_msg,
            ordered_consumer=True,
            idle_heartbeat=REPLAY_IDLE_HEARTBEAT_S,
            config=config,
        )

    async def _on_msg(self, subject_filter: str, msg: Msg) -> None:
        seq: int | None = None
        if self.stream_backed:
            try:
                seq = msg.metadata.sequence.stream
            except Exception:  # not a JetStream delivery: nothing to order by
                seq = None
            if seq is not None and seq <= self._last_seq.get(subject_filter, 0):
                return  # a re-created consumer re-delivered what we already handled
        await self._bus._dispatch(msg.subject, msg.headers, msg.data, self._handler, seq)
        # Recorded only once handled: a handler cut short by a reconnect gets the event again.
        if seq is not None:
            self._last_seq[subject_filter] = seq

    async def _resume(self) -> None:
        """Re-create stream consumers after a reconnect, right after the last handled event."""
        if self._closed or not self.stream_backed:
            return
        async with self._lock:
            for subject in self._subjects:
                old = self._subs.pop(subject, None)
                if old is not None:
                    try:
                        await old.unsubscribe()
                    except Exception as exc:  # the server may have forgotten it already
                        log.debug("unsubscribe of stale consumer for %s: %s", subject, exc)
                await self._start_one(subject)
        log.info("subscription %s resumed after reconnect at %s", self._subjects, self._last_seq)

    async def unsubscribe(self) -> None:
        self._closed = True
        self._bus._forget(self)
        async with self._lock:
            for sub in self._subs.values():
                try:
                    await sub.unsubscribe()
                except Exception as exc:
                    log.debug("unsubscribe: %s", exc)
            self._subs.clear()


class Bus:
    """One NATS connection per process, shared by everything that publishes or subscribes."""

    def __init__(
        self,
        nats_options: dict[str, Any],
        *,
        source: str,
        identity: str = "anonymous",
        outbox_limit: int = 10_000,
        js_replicas: int | None = None,
    ) -> None:
        """``js_replicas``: VGW_JS_REPLICAS; None picks the default from the server (:mod:`vgw.jsreplicas`)."""
        self._options = nats_options
        self._js_replicas = js_replicas
        self.source = source
        self.identity = identity
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._subs: list[Subscription] = []
        self._generation = 0
        self._reconnected = asyncio.Event()
        self._resume_tasks: set[asyncio.Task[None]] = set()
        self._outbox: deque[_Pending] = deque()
        self._outbox_limit = outbox_limit
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False

    # -- connection -----------------------------------------------------------------------------

    @property
    def nc(self) -> NatsClient:
        if self._nc is None:
            raise BusError("bus is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise BusError("bus is not connected")
        return self._js

    @property
    def js_replicas(self) -> int:
        """Replicas of every KV bucket and stream this process creates (and checks existing ones against)."""
        return jsreplicas.wanted_replicas(self._js_replicas, self.nc._server_info)

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def generation(self) -> int:
        """Increases at every reconnect; watchers compare it to know when to rebuild."""
        return self._generation

    async def wait_reconnect(self, generation: int) -> None:
        """Return once the connection has been re-established after ``generation``."""
        while self._generation <= generation:
            self._reconnected.clear()
            if self._generation > generation:
                return
            await self._reconnected.wait()

    async def connect(self) -> None:
        """Connect once (raises if no server answers); later reconnects are automatic and endless."""

        async def disconnected() -> None:
            metrics.BUS_CONNECTED.set(0)
            if not self._closing:
                log.warning("NATS disconnected; reconnecting")

        async def reconnected() -> None:
            metrics.BUS_CONNECTED.set(1)
            metrics.BUS_RECONNECTS.inc()
            url = self._nc.connected_url.netloc if self._nc and self._nc.connected_url else "?"
            log.info("NATS reconnected to %s", url)
            self._generation += 1
            self._reconnected.set()
            for sub in list(self._subs):
                task = asyncio.create_task(self._resume(sub))
                self._resume_tasks.add(task)
                task.add_done_callback(self._resume_tasks.discard)

        async def error(exc: Exception) -> None:
            text = str(exc or type(exc).__name__)
            if "permissions violation" in text.lower():
                # A refused publish or subscription: NATS keeps the connection, so this is the only trace.
                operation = "subscribe" if "subscription" in text.lower() else "publish"
                metrics.BUS_PERMISSION_ERRORS.labels(self.identity, operation).inc()
                _reject_log.warning(
                    f"perm-{operation}", "NATS refused a %s for identity %s: %s", operation, self.identity, text
                )
                return
            if isinstance(exc, AuthorizationError):
                metrics.BUS_AUTH_FAILURES.labels(self.identity).inc()
            log.warning("NATS error: %s", text)

        async def closed() -> None:
            metrics.BUS_CONNECTED.set(0)

        nc = await nats.connect(
            **self._options,
            allow_reconnect=True,
            # nats-py uses one limit for the first connect and for reconnects; -1 would make the first
            # connect hang forever on a wrong URL. Bound it, then reconnect endlessly once connected.
            max_reconnect_attempts=1,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
            closed_cb=closed,
        )
        nc.options["max_reconnect_attempts"] = -1
        self._nc = nc
        self._js = self._nc.jetstream()
        metrics.BUS_CONNECTED.set(1)
        log.info("NATS connected to %s", self._nc.connected_url.netloc if self._nc.connected_url else "?")

    async def connect_forever(self, stop: asyncio.Event | None = None, max_wait_s: float = 5.0) -> bool:
        """Connect, retrying with back-off until it works or ``stop`` is set. Shows progress."""
        delay, attempt = 0.2, 0
        while stop is None or not stop.is_set():
            attempt += 1
            try:
                await self.connect()
                return True
            except Exception as exc:
                if isinstance(exc, AuthorizationError) or "authorization" in str(exc).lower():
                    metrics.BUS_AUTH_FAILURES.labels(self.identity).inc()
                log.warning(
                    "waiting for NATS at %s (attempt %d, retry in %.1fs): %s",
                    ",".join(self._options.get("servers", [])),
                    attempt,
                    delay,
                    exc or type(exc).__name__,
                )
            try:
                if stop is None:
                    await asyncio.sleep(delay)
                else:
                    await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, max_wait_s)
        return False

    async def _resume(self, sub: Subscription) -> None:
        try:
            await sub._resume()
        except Exception as exc:
            # The server may still be coming up; the next reconnect (or this retry) fixes it.
            log.warning("resuming subscription %s failed (%s); retrying", sub.subjects, exc)
            await asyncio.sleep(0.5)
            if self.is_connected:
                await self._resume(sub)

    async def _seq_before(self, since: datetime) -> int:
        """The event stream's sequence just before the first event stored at or after ``since``: the
        server's own answer, read from a short-lived consumer started at that time."""
        probe = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_TIME,
            opt_start_time=since,
            ack_policy=api.AckPolicy.NONE,
            mem_storage=True,
            inactive_threshold=5.0,  # gone by itself if the delete below does not make it
        )
        info = await self.js.add_consumer(EVENT_STREAM, probe)
        try:
            await self.js.delete_consumer(EVENT_STREAM, info.name)
        except Exception as exc:
            log.debug("deleting the start-time probe consumer %s: %s", info.name, exc)
        # A consumer made by start time reports the sequence before its first as already delivered.
        return info.delivered.stream_seq if info.delivered is not None else 0

    async def ensure_event_stream(self, max_age_s: float = 7 * 86400, max_bytes: int = 1 << 30) -> None:
        """Create the event stream if it does not exist, with :attr:`js_replicas`. An existing one is
        left as operators set it; a replica count other than wanted is reported (:mod:`vgw.jsreplicas`)."""
        wanted = self.js_replicas
        try:
            info = await retrying("stream_info", lambda: self.js.stream_info(EVENT_STREAM), what=EVENT_STREAM)
            jsreplicas.record(EVENT_STREAM, info.config.num_replicas or 1, wanted, "the event stream")
            return
        except NotFoundError:
            pass
        config = api.StreamConfig(
            name=EVENT_STREAM,
            subjects=[EVENT_SUBJECTS],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.OLD,
            max_age=max_age_s,
            max_bytes=max_bytes,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=wanted,
            description="Every VGW event (vgw.v1.>), for replay and audit",
        )
        try:
            await retrying("add_stream", lambda: self.js.add_stream(config), what=EVENT_STREAM)
            log.info(
                "created event stream %s (max age %.0fs, max %d bytes, %d replicas)",
                EVENT_STREAM,
                max_age_s,
                max_bytes,
                wanted,
            )
        except Exception as exc:
            # Another process may have created it between our check and our add; if not, say why.
            try:
                await self.js.stream_info(EVENT_STREAM)
            except NotFoundError:
                raise BusError(f"cannot create the event stream {EVENT_STREAM} with {wanted} replicas: {exc}") from exc
            log.debug("event stream created concurrently: %s", exc)
        await jsreplicas.check(self.js, EVENT_STREAM, wanted, "the event stream")

    async def drain(self) -> None:
        """Store deferred events (bounded wait), stop intake, deliver what is pending, close."""
        self._closing = True
        if self._outbox and not await self.wait_published(timeout=3.0):
            log.error("closing with %d events not stored (NATS unavailable)", len(self._outbox))
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except Exception as exc:
                log.warning("NATS drain: %s", exc)
                await self._nc.close()
        metrics.BUS_CONNECTED.set(0)

    async def close(self) -> None:
        self._closing = True
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
        metrics.BUS_CONNECTED.set(0)

    # -- publishing -----------------------------------------------------------------------------

    async def publish(self, event: Event, *, timeout: float = 2.0, live: bool = False) -> CloudEventMeta:
        """Publish one event so that the event stream stores it.

        ``live=True`` is for liveness signals (the shim's ``dataplane.status`` heartbeat): a plain
        core-NATS publish that waits for nothing and never queues. Live subscribers get it even while
        the stream cannot store (a NATS cluster electing the stream's leader, an outbox of older
        events), which is when a heartbeat held back would make route control withdraw a working
        node; the stream still stores it when it can (same message id). While NATS is away it is not
        sent at all: a heartbeat delivered late is no sign of life.

        The stream's acknowledgement is awaited. If NATS is away or the stream does not answer (e.g.
        JetStream still recovering after a restart), the event goes to a bounded in-memory outbox
        that is replayed in order, with the same message id (so the stream drops duplicates), as soon
        as the stream answers again. Later events queue behind it to keep the order.
        """
        encoded = encode(event, source=self.source)
        etype = encoded.meta.type
        with producer_span(event.subject_base(), encoded.subject, etype, encoded.meta.id, encoded.headers):
            # Nats-Msg-Id lets the stream drop a duplicate when a publish is retried after a lost ack.
            pending = _Pending(
                encoded.subject, {**encoded.headers, "Nats-Msg-Id": encoded.meta.id}, encoded.body, etype
            )
            if live:
                await self._send_live(pending)
            elif self._outbox or not self.is_connected:
                self._enqueue(pending)
            else:
                try:
                    await self._store(pending, timeout)
                except Exception as exc:
                    log.warning("publish of %s deferred to the outbox: %s", etype, exc or type(exc).__name__)
                    self._enqueue(pending)
        metrics.BUS_PUBLISHED.labels(etype).inc()
        return encoded.meta

    async def _send_live(self, p: _Pending) -> None:
        if not self.is_connected:
            metrics.BUS_LIVE_UNSENT.labels(p.type).inc()
            return
        try:
            await self.nc.publish(p.subject, p.body, headers=p.headers)
        except Exception as exc:  # the connection went away under us: as if it had been away
            metrics.BUS_LIVE_UNSENT.labels(p.type).inc()
            log.debug("live publish of %s not sent: %s", p.type, exc or type(exc).__name__)

    async def _store(self, p: _Pending, timeout: float) -> None:
        await self.js.publish(p.subject, p.body, timeout=timeout, headers=p.headers)

    def _enqueue(self, p: _Pending) -> None:
        if len(self._outbox) >= self._outbox_limit:
            dropped = self._outbox.popleft()
            metrics.BUS_OUTBOX_DROPPED.labels(dropped.type).inc()
            _reject_log.warning("outbox", "outbox full (%d): dropped the oldest %s", self._outbox_limit, dropped.type)
        self._outbox.append(p)
        metrics.BUS_OUTBOX.set(len(self._outbox))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_outbox())

    async def _flush_outbox(self) -> None:
        delay = 0.05
        while self._outbox:
            if self._nc is None or self._nc.is_closed:
                return
            if not self.is_connected:
                await asyncio.sleep(0.05)
                continue
            head = self._outbox[0]
            try:
                await self._store(head, timeout=1.0)
            except Exception as exc:
                log.debug("outbox: stream not answering yet: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            if self._outbox and self._outbox[0] is head:  # a full outbox may have dropped it meanwhile
                self._outbox.popleft()
            metrics.BUS_OUTBOX.set(len(self._outbox))
        log.info("outbox flushed")

    @property
    def outbox_size(self) -> int:
        return len(self._outbox)

    async def wait_published(self, timeout: float = 5.0) -> bool:
        """Wait until every deferred event is stored; False if some are still pending at timeout."""
        deadline = time.monotonic() + timeout
        while self._outbox and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return not self._outbox

    async def flush(self, timeout: float = 2.0) -> None:
        await self.nc.flush(timeout=int(timeout) or 1)

    # -- subscribing ----------------------------------------------------------------------------

    async def subscribe(
        self,
        handler: Handler,
        *,
        types: Iterable[type[Event]] = (),
        subject: str | None = None,
        queue: str | None = None,
        since: datetime | None = None,
        live: bool = False,
    ) -> Subscription:
        """Subscribe ``handler`` to event types and/or a subject (wildcards allowed).

        ``since`` replays stored events from that time first (stream-backed only). ``queue`` shares
        events among the members of a queue group (core NATS, no replay). ``live=True`` is a core
        NATS subscription without a group: no replay, no resume, and no dependence on the event
        stream, for the liveness signals ``publish(live=True)`` sends.
        """
        if live:
            if queue is not None or since is not None:
                raise ValueError("a live subscription has no queue group and cannot replay")
            queue = ""  # core NATS, every subscriber gets every message
        subjects = [t.subject_filter() for t in types]
        if subject:
            subjects.append(subject)
        if not subjects:
            raise ValueError("subscribe needs event types or a subject")
        if queue is not None and since is not None:
            raise ValueError("a queue subscription cannot replay (since=...)")
        if queue is None:
            outside = [s for s in subjects if not _within_stream(s)]
            if outside:
                raise ValueError(f"subjects {outside} are not in the event stream ({EVENT_SUBJECTS})")
            await self.ensure_event_stream()
        sub = Subscription(self, subjects, handler, queue, since)
        await sub._start()
        self._subs.append(sub)
        return sub

    def _forget(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    async def _dispatch(
        self, subject: str, headers: dict[str, str] | None, body: bytes, handler: Handler, seq: int | None
    ) -> None:
        try:
            meta, event = decode(subject, headers, body)
        except Rejected as r:
            metrics.BUS_REJECTED.labels(r.reason).inc()
            _reject_log.warning(r.reason, "rejected message on %s: %s", subject[:200], r.detail)
            return
        etype = meta.type
        metrics.BUS_RECEIVED.labels(etype).inc()
        start = time.perf_counter()
        with consumer_span(type(event).subject_base(), subject, etype, meta.id, headers or {}) as span:
            try:
                await handler(Received(subject=subject, meta=meta, event=event, stream_seq=seq))
            except Exception as exc:
                metrics.BUS_HANDLER_ERRORS.labels(etype).inc()
                span.record_exception(exc)
                log.exception("handler for %s (id %s) failed", etype, meta.id)
        metrics.BUS_HANDLE_SECONDS.labels(etype).observe(time.perf_counter() - start)


def _within_stream(subject: str) -> bool:
    return subject == EVENT_SUBJECTS or subject.startswith(SUBJECT_ROOT + ".")
