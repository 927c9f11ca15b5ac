"""vgw-shim: the forwarder's voice on the bus (docs/shim.md).

It watches the config store and the ``vgw_health`` bucket (level-triggered: every reconnect starts
from a snapshot), computes this node's desired forwarder state once per burst of changes
(:mod:`vgw.coalesce`), and keeps vgw-fwd at it over the control socket: a full apply on start and
whenever the forwarder (re)starts, deltas otherwise. Its long-running tasks run under the runtime's
supervisor (restarted on an unexpected exception, ``/readyz`` 503 meanwhile). It
publishes ``dataplane.status`` every second and exports the forwarder's counters as Prometheus
metrics, and writes the forwarder's per-service and per-backend totals to the ``vgw_traffic``
bucket (``vgwctl top``). If NATS goes away nothing changes in the forwarder (fail static); a
forwarder that restarts meanwhile gets the last known state again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import nats.errors
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import Field, field_validator

from dataplane.shim.desired import DesiredState, NodePlan, delta, render
from dataplane.shim.fwdmetrics import GAUGE_COUNTERS, half_open_metric, protection_metrics
from vgw.coalesce import settle
from vgw.config import ConfigDocument
from vgw.config.store import BUCKET as CONFIG_BUCKET
from vgw.config.store import ConfigReader
from vgw.events import DataplaneStatus, ForwarderState
from vgw.fwdctl import FwdClient, FwdError, FwdUnavailableError
from vgw.health import HEALTH_BUCKET, HealthEntry
from vgw.naming import check_name
from vgw.runtime import Runtime, run
from vgw.settings import VgwSettings
from vgw.store import Change, KvStore, Snapshot, WatchEvent
from vgw.traffic import node_traffic, open_traffic

log = logging.getLogger("vgw.shim")
tracer = trace.get_tracer("vgw.shim")

MAX_CAUSES = 32
"""Health transitions an apply span links to at most (a burst of thousands would make a huge span)."""

APPLIES = Counter("vgw_shim_applies_total", "State applies to the forwarder", ["mode", "result"])
APPLY_SECONDS = Histogram(
    "vgw_shim_apply_seconds",
    "Time to apply a state to the forwarder (control socket round trip included)",
    ["mode"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
FWD_RESTARTS = Counter("vgw_shim_forwarder_restarts_total", "Forwarder (re)starts seen by the shim")
RECOMPUTE_SECONDS = Histogram(
    "vgw_shim_recompute_seconds",
    "Time to compute the desired state once (per burst of input changes)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
INPUT_CHANGES = Counter("vgw_shim_input_changes_total", "Config revisions and health changes received", ["input"])
APPLIED_REVISION = Gauge("vgw_shim_applied_config_revision", "Config revision the forwarder runs")
DESIRED_REVISION = Gauge("vgw_shim_desired_config_revision", "Config revision the shim last read")


class ShimSettings(VgwSettings):
    node_id: str = Field(description="This node's id in the config (nodes[].id)")
    fwd_socket: str = Field(default="/run/vgw-fwd.sock", description="vgw-fwd's control socket")
    status_interval_s: float = Field(default=1.0, gt=0, le=60, description="dataplane.status period")
    first_status_wait_s: float = Field(
        default=10.0,
        ge=0,
        le=120,
        description="At start, the first dataplane.status waits (at most this long) until the shim has applied "
        "its state or found the forwarder away",
    )
    fwd_check_interval_s: float = Field(
        default=0.2, gt=0, le=10, description="How often the shim checks the forwarder is alive (restart detection)"
    )
    coalesce_quiet_s: float = Field(
        default=0.1,
        ge=0,
        le=5,
        description="A burst of config/health changes is computed once it has been quiet this long...",
    )
    coalesce_max_s: float = Field(
        default=0.5,
        ge=0,
        le=10,
        description="...or at the latest this long after its first change (the bound on the added delay)",
    )
    config_bucket: str = CONFIG_BUCKET
    health_bucket: str = HEALTH_BUCKET

    @field_validator("node_id")
    @classmethod
    def _check_node(cls, v: str) -> str:
        return check_name(v)


class ForwarderCollector(Collector):
    """Exports the forwarder's last STATS reply (counters are the forwarder's own totals)."""

    def __init__(self, shim: Shim) -> None:
        self.shim = shim

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("vgw_forwarder_up", "1 while the shim is connected to vgw-fwd")
        up.add_metric([], 1.0 if self.shim.fwd_up else 0.0)
        yield up
        st = self.shim.last_stats
        if not st or not self.shim.fwd_up:
            return
        gen = GaugeMetricFamily("vgw_forwarder_generation", "State generation the forwarder runs")
        gen.add_metric([], float(st.get("generation", 0)))
        yield gen
        counters: dict[str, int] = st.get("counters", {})
        ev = CounterMetricFamily("vgw_forwarder_events", "Forwarder events (core and I/O)", labels=["event"])
        drops = CounterMetricFamily("vgw_forwarder_drops", "Packets dropped, by reason", labels=["reason"])
        conns = GaugeMetricFamily("vgw_forwarder_connections", "Connections in the tables of all workers")
        for name, value in counters.items():
            if name == "conn_active":
                conns.add_metric([], float(value))
            elif name in GAUGE_COUNTERS:
                continue  # gauges with their own metric (half_open_metric)
            elif name.startswith("drop_"):
                drops.add_metric([name[5:]], float(value))
            elif name.startswith(("fwd_drop_", "ctl_drop_")):
                drops.add_metric([name[9:]], float(value))
            elif name != "drop":
                ev.add_metric([name], float(value))
        yield ev
        yield drops
        yield conns
        yield from half_open_metric(counters)
        pp = CounterMetricFamily("vgw_forwarder_port_packets", "Packets per port", labels=["port", "direction"])
        pb = CounterMetricFamily("vgw_forwarder_port_bytes", "Bytes per port", labels=["port", "direction"])
        for port, p in st.get("ports", {}).items():
            pp.add_metric([port, "rx"], float(p.get("rx_packets", 0)))
            pp.add_metric([port, "tx"], float(p.get("tx_packets", 0)))
            pb.add_metric([port, "rx"], float(p.get("rx_bytes", 0)))
            pb.add_metric([port, "tx"], float(p.get("tx_bytes", 0)))
        yield pp
        yield pb
        sp = CounterMetricFamily(
            "vgw_forwarder_service_packets", "Packets per service", labels=["service", "direction"]
        )
        sb = CounterMetricFamily("vgw_forwarder_service_bytes", "Bytes per service", labels=["service", "direction"])
        sc = CounterMetricFamily("vgw_forwarder_service_connections", "New connections per service", labels=["service"])
        sa = GaugeMetricFamily(
            "vgw_forwarder_service_active_connections", "Connections in the tables, per service", labels=["service"]
        )
        for name, s in st.get("services", {}).items():
            sp.add_metric([name, "in"], float(s.get("packets_in", 0)))
            sp.add_metric([name, "out"], float(s.get("packets_out", 0)))
            sb.add_metric([name, "in"], float(s.get("bytes_in", 0)))
            sb.add_metric([name, "out"], float(s.get("bytes_out", 0)))
            sc.add_metric([name], float(s.get("conn_new", 0)))
            sa.add_metric([name], float(s.get("conn_active", 0)))
        yield sp
        yield sb
        yield sc
        yield sa
        yield from protection_metrics(st)
        yield from memory_metrics(st.get("memory", {}))


def memory_metrics(mem: dict[str, Any]) -> Iterator[Any]:
    """What the forwarder's configuration costs (its own figure, the formula of the memory budget),
    its budget and what it really holds (anon + file is what the budget covers)."""
    if not mem:
        return
    budget = GaugeMetricFamily(
        "vgw_forwarder_memory_budget_bytes", "The forwarder's memory budget (0: not enforced by the forwarder)"
    )
    budget.add_metric([], float(mem.get("budget_bytes", 0)))
    yield budget
    cost = GaugeMetricFamily(
        "vgw_forwarder_memory_cost_bytes", "What the applied configuration costs the forwarder", labels=["part"]
    )
    for part, value in mem.get("cost_bytes", {}).items():
        cost.add_metric([part], float(value))
    yield cost
    resident = GaugeMetricFamily(
        "vgw_forwarder_resident_bytes", "The forwarder's resident memory by kind (anon, file, shmem)", labels=["kind"]
    )
    for kind in ("anon", "file", "shmem"):
        resident.add_metric([kind], float(mem.get(f"rss_{kind}_bytes", 0)))
    yield resident


class Shim:
    def __init__(self, settings: ShimSettings) -> None:
        self.settings = settings
        self.node = settings.node_id
        self.client = FwdClient(settings.fwd_socket, timeout_s=30)
        self.doc: ConfigDocument | None = None
        self.revision = 0
        self.health: dict[str, HealthEntry] | None = None
        self.desired: DesiredState | None = None
        self.applied: DesiredState | None = None
        self.failed: DesiredState | None = None  # desired state the forwarder rejected (not retried)
        self.last_apply_error: str | None = None
        self.fwd_up = False
        self.fwd_keeps_state: bool | None = None  # STATS conn_state.enabled, last known
        self.fwd_identity: tuple[int, int] | None = None  # (pid, start_unix_ns)
        self.fwd_started_at: datetime | None = None
        self.fwd_generation = 0
        self.applied_generation = 0
        self.last_stats: dict[str, Any] | None = None
        self.last_stats_at: datetime | None = None
        self.stats_read = asyncio.Event()
        self.known = asyncio.Event()
        """Set once this shim knows what to report: the forwarder is away, or it applied (or failed to)."""
        self.plan: NodePlan | None = None  # the config part of the desired state, per revision
        self.changed = asyncio.Event()
        self.dirty = asyncio.Event()  # an input changed since the last recompute
        self._causes: list[Context] = []
        """Trace contexts of the health transitions behind the next apply (the first MAX_CAUSES)."""
        self._cause_count = 0
        self.seq = 0
        self.collector = ForwarderCollector(self)

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self, rt: Runtime[ShimSettings]) -> None:
        self.rt = rt
        with contextlib.suppress(ValueError):
            REGISTRY.register(self.collector)
        rt.health.add_check("forwarder", lambda: (self.fwd_up, "forwarder control socket not connected"))
        reader = ConfigReader(rt.bus, self.settings.config_bucket, recheck=self.settings.config_recheck)
        self.reader = await reader.open()
        self.health_kv = await KvStore.attach(
            rt.bus, self.settings.health_bucket, HealthEntry, writer="vgw-healthcheck"
        )
        self.traffic_kv = await open_traffic(rt.bus)
        sup = rt.supervisor
        sup.spawn("config", self._watch_config)
        sup.spawn("health", self._watch_health)
        sup.spawn("recompute", self._recompute_loop)
        sup.spawn("forwarder", self._forwarder_loop)
        sup.spawn("status", self._status_loop)
        # vgwctl top's figures: worth a restart, not worth taking the node out of readiness
        sup.spawn("traffic", self._traffic_loop, required=False)
        log.info("shim for node %s on %s", self.node, self.settings.fwd_socket)

    async def stop(self) -> None:
        rt = getattr(self, "rt", None)
        if rt is not None:
            # the tasks end before the last status and the socket close (the runtime's own
            # supervisor.stop() after this one finds nothing left to do)
            await rt.supervisor.stop()
        with contextlib.suppress(Exception):
            await self._publish_status()
        await self.client.close()
        with contextlib.suppress(KeyError):
            REGISTRY.unregister(self.collector)

    # --- inputs (level-triggered) ---------------------------------------------------------------
    # The watches only update the view and mark it dirty; the recompute task computes the desired
    # state once per burst. A (re)started watch begins with a snapshot (KvStore and ConfigReader
    # watches do), so a restart by the supervisor rebuilds the view.
    async def _watch_config(self) -> None:
        async for rev in self.reader.watch():
            self.on_config(rev.document, rev.revision)

    async def _watch_health(self) -> None:
        async for ev in self.health_kv.watch():
            self.on_health(ev)

    def on_config(self, doc: ConfigDocument, revision: int) -> None:
        """A config revision arrived (the whole document)."""
        INPUT_CHANGES.labels("config").inc()
        self.doc, self.revision, self.plan = doc, revision, None
        DESIRED_REVISION.set(revision)
        log.info("config revision %d", revision)
        self.dirty.set()

    def on_health(self, ev: WatchEvent[HealthEntry]) -> None:
        """A snapshot of, or a change in, the health bucket."""
        if isinstance(ev, Snapshot):
            self.health = {k: e.value for k, e in ev.entries.items()}
        elif isinstance(ev, Change) and self.health is not None:
            INPUT_CHANGES.labels("health").inc()
            if ev.entry is None:
                self.health.pop(ev.key, None)
            else:
                self.health[ev.key] = ev.entry.value
                if ev.entry.value.traceparent:
                    # The apply this change causes joins the health transition's trace.
                    self._cause_count += 1
                    if len(self._causes) < MAX_CAUSES:
                        self._causes.append(propagate.extract({"traceparent": ev.entry.value.traceparent}))
        self.dirty.set()

    async def _recompute_loop(self) -> None:
        # A (re)started loop computes at once: a burst marked before a failure is not lost.
        self.dirty.set()
        quiet, most = self.settings.coalesce_quiet_s, self.settings.coalesce_max_s
        while True:
            await self.dirty.wait()
            await settle(self.dirty, quiet_s=quiet, max_s=most)
            self._recompute()

    def _recompute(self) -> None:
        # Only once both views are complete: applying config without health would put every
        # backend in service for a moment.
        if self.doc is None or self.health is None:
            return
        t0 = time.perf_counter()
        if self.plan is None or self.plan.config_revision != self.revision:
            self.plan = NodePlan.build(self.doc, self.node, self.revision)
            for s in self.plan.skipped:
                log.warning("not programmed: %s", s)
        new = self.plan.evaluate(self.health, self.desired)
        RECOMPUTE_SECONDS.observe(time.perf_counter() - t0)
        if new != self.desired:
            self.desired = new
            self.changed.set()
        elif self.desired == self.applied:
            # transitions that ended where they began (down and up within a burst) caused nothing:
            # the next apply is not theirs
            self._take_causes()

    # --- the forwarder ----------------------------------------------------------------------------
    async def _check_forwarder(self) -> None:
        """Connects if needed and detects a (re)started forwarder by its identity."""
        hello = await self.client.hello()
        ident = (int(hello["pid"]), int(hello["start_unix_ns"]))
        self.fwd_generation = int(hello["generation"])
        if self.applied is not None and ident == self.fwd_identity and self.fwd_generation != self.applied_generation:
            # the shim is the forwarder's single writer: someone else changed it; put it back
            log.warning(
                "forwarder generation %d is not the %d this shim applied: full apply",
                self.fwd_generation,
                self.applied_generation,
            )
            self.applied = None
        if ident != self.fwd_identity:
            if self.fwd_identity is not None:
                log.warning("forwarder restarted (pid %d): full apply", ident[0])
            FWD_RESTARTS.inc()
            self.fwd_identity = ident
            self.fwd_started_at = datetime.fromtimestamp(ident[1] / 1e9, tz=UTC)
            self.applied = None
            self.failed = None
        self.fwd_up = True

    def _forwarder_down(self, why: str) -> None:
        if self.fwd_up:
            log.warning("forwarder unavailable: %s", why)
        self.fwd_up = False
        self.applied = None
        self.last_stats = None

    async def _forwarder_loop(self) -> None:
        interval = self.settings.fwd_check_interval_s
        last_stats = 0.0
        # A restart after a failure starts on a fresh connection: the old one may be mid-request.
        await self.client.close()
        while True:
            # Cleared before the state is compared, not after the apply: a burst computed while an
            # apply is in flight wakes the loop again at once instead of a check interval later.
            self.changed.clear()
            try:
                await self._check_forwarder()
                if self.desired is not None and self.desired not in (self.applied, self.failed):
                    await self._apply(self.desired)
                if time.monotonic() - last_stats >= self.settings.status_interval_s:
                    self.last_stats = await self.client.stats()
                    self.last_stats_at = datetime.now(UTC)
                    self.stats_read.set()
                    self._note_conn_state(self.last_stats)
                    last_stats = time.monotonic()
            except FwdUnavailableError as exc:
                self._forwarder_down(str(exc))
                await self.client.close()
            if not self.fwd_up or self.applied is not None or self.failed is not None:
                self.known.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), interval)

    def _take_causes(self) -> tuple[Context | None, list[Link], int]:
        """The apply's trace parent, its links and how many health transitions it carries. A burst's
        apply is a child of its first transition and links to each (the first MAX_CAUSES;
        ``vgw.apply.causes`` counts them all)."""
        causes, ncauses = self._causes, self._cause_count
        self._causes, self._cause_count = [], 0
        links = [Link(trace.get_current_span(c).get_span_context()) for c in causes]
        return (causes[0] if causes else None), links, ncauses

    async def _apply(self, want: DesiredState) -> None:
        gen = self.fwd_generation + 1
        mode = "full"
        doc = render(want, gen)
        nops = len(want.services)
        if self.applied is not None:
            d = delta(self.applied, want, gen)
            if d is not None:
                mode, (doc, nops) = "delta", d
                if nops == 0:
                    self._take_causes()  # nothing reaches the forwarder: no span, no causes kept
                    self.applied = want
                    APPLIED_REVISION.set(want.config_revision)
                    return
        cause, links, ncauses = self._take_causes()
        with tracer.start_as_current_span(
            "apply forwarder state",
            context=cause,
            links=links,
            attributes={
                "vgw.node": self.node,
                "vgw.apply.mode": mode,
                "vgw.apply.generation": gen,
                "vgw.apply.operations": nops,
                "vgw.config.revision": want.config_revision,
                "vgw.apply.services": len(want.services),
                "vgw.apply.causes": ncauses,
            },
        ) as span:
            t0 = time.perf_counter()
            try:
                if mode == "delta":
                    try:
                        applied_gen = await self.client.delta(doc)
                    except FwdError as exc:
                        # The forwarder's state is not what we think: fall back to a full apply.
                        log.warning("delta rejected (%s); full apply", exc)
                        span.add_event("delta rejected", {"error": str(exc)})
                        APPLIES.labels("delta", "error").inc()
                        mode = "full"
                        span.set_attribute("vgw.apply.mode", mode)
                        applied_gen = await self.client.apply(render(want, gen))
                else:
                    try:
                        applied_gen = await self.client.apply(doc)
                    except FwdError as exc:
                        if "not newer" not in str(exc):
                            raise
                        # someone else applied meanwhile (an operator with fwdctl): take the
                        # forwarder's generation and apply ours on top, once
                        self.fwd_generation = int((await self.client.hello())["generation"])
                        gen = self.fwd_generation + 1
                        span.set_attribute("vgw.apply.generation", gen)
                        applied_gen = await self.client.apply(render(want, gen))
            except FwdError as exc:
                APPLIES.labels(mode, "error").inc()
                span.set_status(trace.StatusCode.ERROR, str(exc))
                self.last_apply_error = str(exc)[:1000]
                self.failed = want
                log.error("forwarder rejected the state for revision %d: %s", want.config_revision, exc)
                return
            APPLY_SECONDS.labels(mode).observe(time.perf_counter() - t0)
        APPLIES.labels(mode, "ok").inc()
        self.fwd_generation = self.applied_generation = applied_gen
        self.applied = want
        self.failed = None
        self.last_apply_error = None
        APPLIED_REVISION.set(want.config_revision)
        log.info(
            "applied revision %d as generation %d (%s, %d ops)",
            want.config_revision,
            applied_gen,
            mode,
            nops,
            extra={"generation": applied_gen, "mode": mode},
        )

    # --- status ---------------------------------------------------------------------------------
    def status(self) -> DataplaneStatus:
        applied = self.applied
        if not self.fwd_up:
            state = ForwarderState.DOWN
        elif applied is None:
            state = ForwarderState.STARTING
        else:
            state = ForwarderState.UP
        return DataplaneStatus(
            node=self.node,
            seq=self.seq,
            interval_s=self.settings.status_interval_s,
            forwarder=state,
            forwarder_started_at=self.fwd_started_at if self.fwd_up else None,
            generation=self.fwd_generation if self.fwd_up else 0,
            config_revision=applied.config_revision if applied is not None and self.fwd_up else None,
            vips=[ipaddress.ip_address(v) for v in applied.vips] if applied is not None and self.fwd_up else [],
            services=len(applied.services) if applied is not None and self.fwd_up else 0,
            last_apply_error=self.last_apply_error,
            active_connections=self._stat("conn_active"),
            half_open_connections=self._stat("conn_halfopen"),
            conn_state_kept=self.fwd_keeps_state,
        )

    def _note_conn_state(self, st: dict[str, Any] | None) -> None:
        """Whether the forwarder keeps its tables across a restart; kept while it is down (a restart
        is exactly when route control needs to know)."""
        cs = (st or {}).get("conn_state")
        if isinstance(cs, dict) and isinstance(cs.get("enabled"), bool):
            self.fwd_keeps_state = cs["enabled"]

    def _stat(self, counter: str) -> int | None:
        """A gauge of the last STATS reply (route control's drain reads the connection count); None
        while the forwarder is not connected or its counters are not known."""
        st = self.last_stats
        if not self.fwd_up or not st:
            return None
        value = st.get("counters", {}).get(counter)
        return int(value) if isinstance(value, int) and value >= 0 else None

    async def _publish_status(self) -> None:
        st = self.status()
        self.seq += 1
        await self.rt.bus.publish(st, live=True)  # a heartbeat: never held behind the stream (vgw/bus.py)

    async def _status_loop(self) -> None:
        interval = self.settings.status_interval_s
        # A restarted shim's first heartbeat would say "starting, nothing programmed" about a forwarder
        # its predecessor programmed, and route control would withdraw the node for that. Until it
        # knows (its first apply, or the forwarder away), it says nothing: route control's own look
        # at the forwarder carries the last heartbeat meanwhile (docs/routectl.md, "Local truth").
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.known.wait(), self.settings.first_status_wait_s)
        next_at = time.monotonic()
        while True:
            # NATS away is not an error here (a live publish is then not sent, vgw/bus.py)
            await self._publish_status()
            next_at = max(next_at + interval, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    async def _traffic_loop(self) -> None:
        """Writes each new STATS reply's per-service and per-backend totals to ``vgw_traffic`` (a task
        of its own: a slow or absent NATS must not delay the forwarder loop)."""
        while True:
            await self.stats_read.wait()
            self.stats_read.clear()
            st, at = self.last_stats, self.last_stats_at
            if st is None or at is None or not self.fwd_up:
                continue
            try:
                await self.traffic_kv.put(self.node, node_traffic(self.node, st, at))
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                # NATS away: the next STATS read writes a fresh snapshot; an old one is worth nothing
                log.warning("writing the traffic snapshot failed: %s", exc)


def main() -> None:
    run("shim", Shim, ShimSettings)


if __name__ == "__main__":
    main()
