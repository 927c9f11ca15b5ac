"""routectl as a service on the vgw runtime: inputs from NATS, decisions, the speaker, outputs.

Inputs (state is level, events are edges):

* config -- :class:`vgw.config.store.ConfigReader` watch (current revision, then each new one);
* health -- the ``vgw_health`` KV bucket (snapshot, then changes); ``backend.up``/``backend.down``
  events only name the cause of a decision;
* the local forwarder -- ``dataplane.status.<node>`` heartbeats (freshness is measured on arrival);
* withdraw requests -- the monitor's in force from ``vgw_requests`` (:mod:`vgw.withdraw_requests`) on
  start, then ``request.node.withdraw.<node>.*`` and ``request.cluster.withdraw.*`` events (an
  operator's replayed from the event stream on start: they exist only as events);
* its own previous decisions -- the ``vgw_routes`` KV bucket (hysteresis and damping state).

Nothing is announced before config, health, the requests and the previous decisions are loaded.
Outputs: routes to the speaker, ``vip.announce``/``vip.withdraw`` events on every state or
attribute change (with the cause's event id, in the cause's trace and linked to it), the decision of
every VIP in ``vgw_routes``, the node's BGP sessions in ``vgw_bgp`` (:mod:`.sessions`), and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan

from vgw.bus import Bus, Received, Subscription
from vgw.coalesce import settle
from vgw.config import ConfigDocument, NodeView, node_view
from vgw.config.store import ConfigReader, ConfigRevision
from vgw.events import (
    BackendDown,
    BackendUp,
    BgpAttributes,
    ClusterWithdrawRequest,
    ConfigChanged,
    DataplaneStatus,
    DrainEndReason,
    ForwarderState,
    NodeDrainCompleted,
    NodeDrainStarted,
    NodeWithdrawRequest,
    RouteReason,
    RouteState,
    VipAnnounce,
    VipWithdraw,
)
from vgw.health import HealthEntry
from vgw.naming import IP
from vgw.routes import ROUTES_BUCKET, RouteEntry, route_key, route_key_prefix
from vgw.runtime import Runtime
from vgw.store import Change, KvStore, Snapshot
from vgw.supervise import Supervisor
from vgw.withdraw_requests import CLUSTER_KEYS, node_keys, read_in_force

from . import metrics
from .decide import Announcers, Cause, DampingPolicy, Decider, Decision, DrainEdge, ForwarderObs, Requests
from .localfwd import LocalForwarder, Verdict
from .sessions import publish_sessions
from .settings import RoutectlSettings
from .speaker import Speaker, SpeakerConfig

log = logging.getLogger("routectl")

REQUEST_REPLAY_MARGIN = timedelta(seconds=10)
"""At start, request events from this long before the requests bucket is read are replayed too."""
_tracer = trace.get_tracer("vgw.routectl")


def _cause_here(r: Received) -> Cause:
    """The cause record of the event being handled (the handler runs in its consumer span)."""
    ctx = trace.get_current_span().get_span_context()
    return Cause(event_id=r.meta.id, span=ctx if ctx.is_valid else None, at=time.monotonic())


class Routectl:
    def __init__(self, settings: RoutectlSettings) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        damping = DampingPolicy(
            hold_down_s=settings.hold_down_s,
            hold_down_max_s=settings.hold_down_max_s,
            half_life_s=settings.flap_half_life_s,
            withdrawals_per_min=settings.health_withdrawals_per_min,
        )
        self.decider = Decider(
            self.node_id, damping, settings.dataplane_stale_s, restart_grace_s=settings.forwarder_restart_grace_s
        )
        self.requests = Requests()
        self.local = (
            LocalForwarder(
                settings.fwd_socket,
                interval_s=settings.fwd_probe_interval_s,
                timeout_s=settings.fwd_probe_timeout_s,
                grace_s=settings.fwd_gone_after_s,
            )
            if settings.fwd_socket
            else None
        )
        self.speaker = Speaker(settings, on_peer_change=self._mark_dirty)
        self._dirty = asyncio.Event()
        self._sup: Supervisor | None = None
        self._task_names: list[str] = []
        self._subs: list[Subscription] = []
        self._bus: Bus | None = None
        self._routes: KvStore[RouteEntry] | None = None
        # inputs
        self._doc: ConfigDocument | None = None
        self._revision = 0
        self._view: NodeView | None = None
        self._vip_revs: dict[IP, int] = {}
        self._health: dict[str, HealthEntry] = {}
        self._health_loaded = False
        self._fwd: ForwarderObs | None = None
        self._health_causes: dict[str, Cause] = {}
        self._config_cause: Cause | None = None
        self._others: dict[str, RouteEntry] = {}
        self._others_loaded = False
        # outputs
        self._applied: dict[IP, Decision] = {}
        self._previous: dict[IP, RouteEntry] = {}
        self.ready = False
        self._stopped = False
        self._nats_down_since: float | None = None
        self._fwd_fresh_at_down = False

    def _mark_dirty(self) -> None:
        self._dirty.set()

    # -- lifecycle --

    async def start(self, rt: Runtime[RoutectlSettings]) -> None:
        bus = self._bus = rt.bus
        self._sup = rt.supervisor
        self._routes = await KvStore.open(bus, ROUTES_BUCKET, RouteEntry, history=5)
        health_store = await KvStore.attach(bus, self.settings.health_bucket, HealthEntry, writer="vgw-healthcheck")
        reader = await ConfigReader(bus, recheck=self.settings.config_recheck).open()
        rt.health.add_check("view", lambda: (self.ready, "rebuilding the view from KV"))

        # 1. our own previous decisions (hysteresis, damping, previous states)
        now = time.monotonic()
        async for ev in self._routes.watch(route_key_prefix(self.node_id)):
            if isinstance(ev, Snapshot):
                for entry in ev.entries.values():
                    self._previous[entry.value.vip] = entry.value
                    self.decider.restore(entry.value, now)
            break
        log.info("restored %d previous decision(s)", len(self._previous))

        # 2. withdraw requests in force. The monitor's: its bucket (state, with expiry), then its
        # events replayed from just before the read, so one that lands meanwhile is not missed.
        # Operators' (other systems publish only events): replayed from the stream, as they keep them.
        since = datetime.now(UTC) - REQUEST_REPLAY_MARGIN
        in_force = await self._requests_in_force(bus)
        log.info("%d withdraw request(s) of the monitor in force", in_force)
        node_base, cluster_base = NodeWithdrawRequest.subject_base(), ClusterWithdrawRequest.subject_base()
        for kind, replay_from in (("monitor", since), ("operator", datetime(1970, 1, 1, tzinfo=UTC))):
            for subject in (f"{node_base}.{self.node_id}.*.{kind}", f"{cluster_base}.*.*.{kind}"):
                self._subs.append(await bus.subscribe(self._on_request, subject=subject, since=replay_from))
        # 3. live inputs. The forwarder's heartbeat over core NATS: while a NATS cluster elects the
        # event stream's leader the stream delivers nothing, and a heartbeat held back that long would
        # withdraw every node at once (the shim publishes it live, too).
        self._subs.append(
            await bus.subscribe(self._on_status, subject=f"{DataplaneStatus.subject_base()}.{self.node_id}", live=True)
        )
        self._subs.append(await bus.subscribe(self._on_backend, types=[BackendUp, BackendDown]))
        self._subs.append(await bus.subscribe(self._on_config_event, types=[ConfigChanged]))
        config_loaded = asyncio.Event()
        routes = self._routes
        self._spawn("config", lambda: self._watch_config(reader, config_loaded))
        self._spawn("routes", lambda: self._watch_others(routes))
        self._spawn("health", lambda: self._watch_health(health_store))
        if self.local is not None:
            local = self.local
            self._spawn("local-forwarder", lambda: local.run(self._mark_dirty))
        await self.speaker.start()
        self._spawn("bgp-sessions", lambda: publish_sessions(bus, self.node_id, self.speaker))

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(config_loaded.wait(), 30.0)
        while not (self._health_loaded and self._others_loaded):
            await asyncio.sleep(0.02)
        await self._first_heartbeat()
        self.ready = True
        log.info(
            "view rebuilt: config revision %d, %d health entries, %d withdraw request(s)",
            self._revision,
            len(self._health),
            len(self.requests),
        )
        self._spawn("decide", self._loop)

    async def _first_heartbeat(self) -> None:
        """Wait (at most the staleness bound) for the forwarder's first heartbeat: deciding without
        one would withdraw every VIP of a healthy node for the second until it arrives -- after a
        restart of routectl, with the routes still at the routers (graceful restart), a spurious
        withdraw. A forwarder that does not answer locally is not waited for."""
        deadline = time.monotonic() + self.settings.dataplane_stale_s
        while self._fwd is None and time.monotonic() < deadline:
            if self.local is not None and self.local.verdict(None, time.monotonic()) == Verdict.GONE:
                break
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stopped = True
        # The speaker stays up: it carries the withdrawals below. The loops also check _stopped.
        if self._sup is not None:
            await self._sup.stop(*self._task_names, timeout_s=2.0)
        for s in self._subs:
            with contextlib.suppress(Exception):
                await s.unsubscribe()
        if self.settings.graceful_restart_s > 0:
            log.info("graceful restart: keeping routes (peers hold them for %ds)", self.settings.graceful_restart_s)
            await self.speaker.stop(withdraw=False)
            return
        announced = [d for d in self._applied.values() if d.state != RouteState.WITHDRAWN]
        log.info("shutting down: withdrawing %d VIP(s)", len(announced))
        await self.speaker.stop(withdraw=True)
        now_wall = datetime.now(UTC)
        for d in announced:
            withdrawn = Decision(
                vip=d.vip,
                role=d.role,
                state=RouteState.WITHDRAWN,
                reason=RouteReason.SHUTDOWN,
                detail="routectl stopped",
                attributes=BgpAttributes(),
                gates=d.gates,
                healthy=d.healthy,
                total=d.total,
                below=d.below,
                penalty=d.penalty,
                damped_until=None,
                cause=None,
                drain=d.drain,  # a restarted routectl reads the drain's progress back
            )
            with contextlib.suppress(Exception):
                await self._publish(withdrawn, d, now_wall)
                await self._write(withdrawn, now_wall, now_wall)

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """A supervised task: restarted (with backoff) if it fails; /readyz is 503 while it is down.
        Each watch starts again from its bucket's snapshot, so a restart rebuilds that input."""
        assert self._sup is not None
        self._sup.spawn(name, factory)
        self._task_names.append(name)

    async def _requests_in_force(self, bus: Bus) -> int:
        """Apply the requests in force for this node and for every cluster from ``vgw_requests``
        (:mod:`vgw.withdraw_requests`; the server expires what its requester stopped refreshing).
        Returns how many; none while no requester has created the bucket."""
        n = 0
        for keys in (node_keys(self.node_id), CLUSTER_KEYS):
            try:
                found = await asyncio.wait_for(read_in_force(bus, keys), self.settings.startup_wait_s)
            except Exception as exc:  # an unreadable bucket must not keep routectl from starting
                log.warning("reading the withdraw requests in force (%s): %s", keys, exc)
                continue
            for entry in (found or {}).values():
                ev = entry.event()
                self.requests.apply(ev, Cause(event_id=entry.request_id, span=None, at=time.monotonic()))
                n += 1
        metrics.REQUESTS.set(len(self.requests))
        return n

    # -- inputs --

    async def _watch_config(self, reader: ConfigReader, loaded: asyncio.Event) -> None:
        async for cr in reader.watch():
            self._apply_config(cr)
            loaded.set()

    def _apply_config(self, cr: ConfigRevision) -> None:
        view = node_view(cr.document, self.node_id)
        old = {v.address: v for v, _ in self._view.vips} if self._view is not None else None
        revs: dict[IP, int] = {}
        for vip, _role in view.vips if view is not None else []:
            prev = old.get(vip.address) if old is not None else None
            same = prev is not None and prev == vip
            revs[vip.address] = self._vip_revs.get(vip.address, cr.revision) if same else cr.revision
        self._doc, self._revision, self._view, self._vip_revs = cr.document, cr.revision, view, revs
        self.speaker.configure(
            SpeakerConfig.from_node(view.node, self.settings.graceful_restart_s) if view is not None else None
        )
        if view is None:
            log.warning("node %s is not in config revision %d: nothing to announce", self.node_id, cr.revision)
        else:
            log.info("config revision %d: %d VIP(s) for this node", cr.revision, len(view.vips))
        self._dirty.set()

    async def _watch_others(self, store: KvStore[RouteEntry]) -> None:
        """Other nodes' decisions: who else announces each VIP (the last-announcer guard)."""
        async for ev in store.watch():
            self._on_route_change(ev)

    def _on_route_change(self, ev: Snapshot[RouteEntry] | Change[RouteEntry]) -> None:
        if isinstance(ev, Snapshot):
            self._others = {k: e.value for k, e in ev.entries.items() if e.value.node != self.node_id}
            self._others_loaded = True
        elif ev.entry is None:
            self._others.pop(ev.key, None)
        elif ev.entry.value.node != self.node_id:
            self._others[ev.key] = ev.entry.value
        else:
            return
        self._dirty.set()

    def _announcers(self) -> dict[IP, Announcers]:
        doc = self._doc
        clusters = {n.id: n.cluster for n in doc.nodes} if doc is not None else {}
        mine = clusters.get(self.node_id)
        out: dict[IP, Announcers] = {}
        for e in self._others.values():
            if e.state == RouteState.WITHDRAWN or e.node not in clusters:
                continue
            a = out.get(e.vip, Announcers(0, 0))
            out[e.vip] = Announcers(a.elsewhere + 1, a.other_clusters + (clusters[e.node] != mine))
        return out

    async def _watch_health(self, store: KvStore[HealthEntry]) -> None:
        async for ev in store.watch():
            self._on_health_change(ev)

    def _on_health_change(self, ev: Snapshot[HealthEntry] | Change[HealthEntry]) -> None:
        if isinstance(ev, Snapshot):
            self._health = {k: e.value for k, e in ev.entries.items()}
            self._health_loaded = True
        elif ev.entry is None:
            self._health.pop(ev.key, None)
        else:
            self._health[ev.key] = ev.entry.value
        self._dirty.set()

    async def _on_status(self, r: Received) -> None:
        ev = r.event
        if not isinstance(ev, DataplaneStatus) or ev.node != self.node_id:
            return
        if r.meta.time is not None:
            age = (datetime.now(UTC) - r.meta.time).total_seconds()
            if age > self.settings.dataplane_stale_s:
                return  # a stored heartbeat delivered late (replay): not a sign of life
        prev = self._fwd
        self._fwd = ForwarderObs(status=ev, received_at=time.monotonic(), cause=_cause_here(r))
        if (
            prev is None
            or prev.status.forwarder != ev.forwarder
            or prev.status.config_revision != ev.config_revision
            or prev.status.vips != ev.vips
            or time.monotonic() - prev.received_at > self.settings.dataplane_stale_s
            or (self.decider.drain is not None and prev.status.active_connections != ev.active_connections)
        ):
            self._dirty.set()

    async def _on_backend(self, r: Received) -> None:
        ev = r.event
        if isinstance(ev, BackendUp | BackendDown):
            self._health_causes[ev.service] = _cause_here(r)

    async def _on_config_event(self, r: Received) -> None:
        self._config_cause = _cause_here(r)

    async def _on_request(self, r: Received) -> None:
        ev = r.event
        if not isinstance(ev, NodeWithdrawRequest | ClusterWithdrawRequest):
            return
        if isinstance(ev, NodeWithdrawRequest) and ev.node != self.node_id:
            return
        self.requests.apply(ev, _cause_here(r))
        metrics.REQUESTS.set(len(self.requests))
        log.info(
            "%s request %s (%s) by %s for %s",
            ev.action.value,
            ev.request_id,
            type(ev).name,
            ev.requester,
            ev.vip or "every VIP",
        )
        self._dirty.set()

    # -- the loop --

    async def _loop(self) -> None:
        """Level-triggered: a change only marks the view dirty; one evaluation per burst, from the
        latest inputs (a rack of backends going down is one evaluation, not one per backend)."""
        while not self._stopped:
            try:
                await asyncio.wait_for(self._dirty.wait(), self.settings.tick_s)
            except TimeoutError:
                pass  # the tick: timers and staleness
            else:
                await settle(self._dirty, quiet_s=self.settings.coalesce_quiet_s, max_s=self.settings.coalesce_max_s)
            self._dirty.clear()
            metrics.EVALUATIONS.inc()
            await self._evaluate()

    def _fail_static(self, now: float) -> bool:
        """True while NATS is unreachable: decisions are frozen (fail static). A silent forwarder is
        indistinguishable from a silent bus, so the heartbeat clock restarts when NATS is back."""
        assert self._bus is not None
        if not self._bus.is_connected:
            if self._nats_down_since is None:
                self._nats_down_since = now
                fwd = self._fwd
                self._fwd_fresh_at_down = fwd is not None and now - fwd.received_at <= self.settings.dataplane_stale_s
                log.warning("NATS unreachable: keeping the current decisions (fail static)")
            return True
        if self._nats_down_since is not None:
            log.info("NATS back after %.1fs: deciding again", now - self._nats_down_since)
            self._nats_down_since = None
            if self._fwd is not None and self._fwd_fresh_at_down:
                self._fwd = dataclasses.replace(self._fwd, received_at=max(self._fwd.received_at, now))
        return False

    def _forwarder_obs(self, now: float) -> tuple[ForwarderObs | None, Verdict]:
        """The heartbeat, corrected by what the forwarder itself answers (see :mod:`.localfwd`)."""
        fwd = self._fwd
        if self.local is None:
            return fwd, Verdict.UNKNOWN
        verdict = self.local.verdict(fwd.status if fwd is not None else None, now)
        if verdict == Verdict.VOUCHES and fwd is not None:
            # Kept: once the forwarder's generation moves on (the restarted shim applies), staleness
            # counts from here, leaving the shim its usual time to report the new state.
            self._fwd = fwd = dataclasses.replace(fwd, received_at=max(fwd.received_at, now))
        elif verdict == Verdict.GONE and fwd is not None:
            # Not stored: the forwarder's restart grace counts from its first "down" observation.
            down = fwd.status.model_copy(update={"forwarder": ForwarderState.DOWN})
            fwd = ForwarderObs(status=down, received_at=now, cause=fwd.cause)
        return fwd, verdict

    async def _evaluate(self) -> None:
        now, now_wall = time.monotonic(), datetime.now(UTC)
        frozen = self._fail_static(now)
        fwd, verdict = self._forwarder_obs(now)
        if frozen and verdict != Verdict.GONE:
            return
        if verdict != Verdict.UNKNOWN:
            metrics.LOCAL_VERDICTS.labels(verdict.value).inc()
        if fwd is not None:
            metrics.FORWARDER_AGE.set(now - fwd.received_at)
        decisions = self.decider.decide(
            self._view,
            self._vip_revs,
            self._health,
            fwd,
            self.requests,
            self._health_causes,
            self._config_cause,
            now,
            now_wall,
            self._announcers() if self.settings.guard_last_announcer else None,
        )
        self._drain_metrics(now_wall)
        changed: list[tuple[Decision, Decision | None]] = []
        for d in decisions:
            prev = self._applied.get(d.vip)
            if prev is not None and prev.signature == d.signature:
                continue
            if d.state == RouteState.WITHDRAWN:
                self.speaker.set_route(d.vip, None)
            else:
                self.speaker.set_route(d.vip, d.attributes)
            changed.append((d, prev))
            if d.reason == RouteReason.REMOVED:
                self._applied.pop(d.vip, None)
            else:
                self._applied[d.vip] = d
        self.speaker.mark_decided()
        if not changed:
            await self._drain_edges(self.decider.drain_events)
            return
        counts = {s: 0 for s in RouteState}
        for d in self._applied.values():
            counts[d.state] += 1
        for s, n in counts.items():
            metrics.VIPS.labels(s.value).set(n)
        for d, prev in changed:
            if prev is None or (prev.state, prev.reason) != (d.state, d.reason):
                metrics.DECISIONS.labels(d.state.value, d.reason.value).inc()
                if d.reason == RouteReason.DAMPED and "limit" in d.detail:
                    metrics.LIMITED.inc()
                log.info(
                    "%s %s: %s (%s)",
                    d.vip,
                    d.state.value,
                    d.reason.value,
                    d.detail,
                    extra={"vip": str(d.vip), "state": d.state.value, "reason": d.reason.value},
                )
            try:
                await self._publish(d, prev, now_wall)
                await self._write(d, now_wall, self.decider.mem[d.vip].since if d.vip in self.decider.mem else None)
            except Exception as exc:
                log.warning("recording the decision for %s: %s", d.vip, exc)
        await self._drain_edges(self.decider.drain_events)

    # -- drains --

    def _drain_metrics(self, now_wall: datetime) -> None:
        drain = self.decider.drain
        done = drain is not None and drain.completed is not None
        metrics.DRAIN_PHASE.labels("draining").set(1 if drain is not None and not done else 0)
        metrics.DRAIN_PHASE.labels("drained").set(1 if done else 0)
        if drain is not None and not done:
            metrics.DRAIN_CONNECTIONS.set(drain.connections if drain.connections is not None else -1)
            metrics.DRAIN_SECONDS_LEFT.set(drain.left_s(now_wall))
        else:
            metrics.DRAIN_CONNECTIONS.set(0)
            metrics.DRAIN_SECONDS_LEFT.set(0)

    async def _drain_edges(self, edges: list[DrainEdge]) -> None:
        """Publish ``node.drain.started`` / ``node.drain.completed`` and count them (after the routes
        they cause were handed to the speaker)."""
        assert self._bus is not None
        view = self._view
        for e in edges:
            st = e.status
            common = {
                "node": self.node_id,
                "cluster": view.node.cluster if view is not None else "unknown",
                "started_at": st.started_at,
                "deadline": st.deadline,
                "timeout_s": st.timeout_s,
                "threshold": st.threshold,
                "active_connections": st.connections,
                "vips": len(view.vips) if view is not None else 0,
                "config_revision": self._revision or None,
                "cause_event_id": e.cause.event_id if e.cause is not None else None,
            }
            event: NodeDrainStarted | NodeDrainCompleted
            if e.reason is None:
                metrics.DRAINS_STARTED.inc()
                event = NodeDrainStarted(**common)
                log.info(
                    "drain started: deprioritised until fewer than %d connections or %s",
                    st.threshold,
                    st.deadline.isoformat(),
                    extra={"drain": "started"},
                )
            else:
                ended_at = st.completed_at or datetime.now(UTC)
                duration = max(0.0, (ended_at - st.started_at).total_seconds())
                metrics.DRAINS_COMPLETED.labels(e.reason.value).inc()
                if e.reason != DrainEndReason.CANCELLED:
                    metrics.DRAIN_SECONDS.observe(duration)
                event = NodeDrainCompleted(**common, reason=e.reason, duration_s=duration, detail=e.detail[:1024])
                log.info(
                    "drain completed (%s) after %.1fs: %s",
                    e.reason.value,
                    duration,
                    e.detail,
                    extra={"drain": e.reason.value},
                )
            links = [Link(e.cause.span)] if e.cause is not None and e.cause.span is not None else []
            with _tracer.start_as_current_span(
                "routectl drain", links=links, attributes={"vgw.node": self.node_id, "vgw.drain": event.name}
            ):
                try:
                    await self._bus.publish(event)
                except Exception as exc:
                    log.warning("publishing %s: %s", event.name, exc)

    # -- outputs --

    def _previous_state(self, d: Decision, prev: Decision | None) -> RouteState | None:
        if prev is not None:
            return prev.state
        old = self._previous.get(d.vip)
        return old.state if old is not None else None

    async def _publish(self, d: Decision, prev: Decision | None, now_wall: datetime) -> None:
        assert self._bus is not None
        previous = self._previous_state(d, prev)
        if prev is not None and prev.state == d.state and prev.attributes == d.attributes:
            return  # only the reason or the gates changed: KV tells, no edge
        if prev is None and d.state == RouteState.WITHDRAWN and previous in (None, RouteState.WITHDRAWN):
            return  # nothing was announced before either
        cls: type[VipAnnounce] | type[VipWithdraw] = VipWithdraw if d.state == RouteState.WITHDRAWN else VipAnnounce
        event = cls(
            node=self.node_id,
            vip=d.vip,
            state=d.state,
            previous_state=previous,
            reason=d.reason,
            detail=d.detail,
            attributes=d.attributes,
            healthy_backends=d.healthy,
            total_backends=d.total,
            config_revision=self._revision or None,
            cause_event_id=d.cause.event_id if d.cause is not None else None,
        )
        links = [Link(d.cause.span)] if d.cause is not None and d.cause.span is not None else []
        parent = (
            trace.set_span_in_context(NonRecordingSpan(d.cause.span))
            if d.cause is not None and d.cause.span is not None
            else None
        )
        with _tracer.start_as_current_span(
            "routectl decide",
            context=parent,
            links=links,
            attributes={
                "vgw.node": self.node_id,
                "vgw.vip": str(d.vip),
                "vgw.route.state": d.state.value,
                "vgw.route.reason": d.reason.value,
            },
        ):
            await self._bus.publish(event)

    async def _write(self, d: Decision, now_wall: datetime, since: datetime | None) -> None:
        assert self._routes is not None
        key = route_key(self.node_id, d.vip)
        if d.reason == RouteReason.REMOVED:
            await self._routes.delete(key)
            return
        damped_until = None
        if d.damped_until is not None:
            damped_until = datetime.fromtimestamp(time.time() + (d.damped_until - time.monotonic()), UTC)
        entry = RouteEntry(
            node=self.node_id,
            vip=d.vip,
            role=d.role,
            state=d.state,
            reason=d.reason,
            detail=d.detail,
            attributes=d.attributes,
            gates=d.gates,
            healthy_backends=d.healthy,
            total_backends=d.total,
            below_low_watermark=d.below,
            config_revision=self._revision or None,
            cause_event_id=d.cause.event_id if d.cause is not None else None,
            since=since or now_wall,
            decided_at=now_wall,
            flap_penalty=d.penalty,
            damped_until=damped_until,
            speaker=self.settings.instance_id,
            drain=d.drain,
        )
        await self._routes.put(key, entry)
