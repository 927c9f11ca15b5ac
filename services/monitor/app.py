"""vgw-monitor: probes every VIP from this vantage point, through the routed path and through each
node; shares observations; the leading instance judges and publishes (docs/monitor.md).

The leader is the smallest vantage id among those with fresh observations, so every instance
agrees without an election; the others only probe and share. A new leader loads the requests in
force from the store and carries on.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge
from pydantic import Field

from vgw.bus import Bus
from vgw.config import ConfigDocument, MonitorProbe
from vgw.config.store import ConfigReader
from vgw.events import MonitorVipStatus, NodeWithdrawRequest, VipHealth
from vgw.monitoring import ROUTED, PathObservation, VipView, view_key
from vgw.runtime import Runtime
from vgw.settings import VgwSettings
from vgw.store import Change, Snapshot

from .announcers import AnnouncerCount
from .judge import Judge, JudgeParams, VipTopology
from .paths import PathKey, ProbePath
from .steering import Steering, SteeringError
from .store import MonitorStore

log = logging.getLogger("vgw.monitor")

HEALTH = Gauge("vgw_monitor_vip_health", "Judged VIP status: 0 ok, 1 degraded, 2 down (leader only)", ["vip", "port"])
LEADER = Gauge("vgw_monitor_leader", "1 while this instance judges and publishes")
REQUESTS = Counter("vgw_monitor_requests_total", "Withdraw requests published", ["kind", "action"])
IN_FORCE = Gauge("vgw_monitor_requests_in_force", "Withdraw requests in force (leader only)")
PATHS = Gauge("vgw_monitor_paths", "Probe paths run by this vantage point")
STEERING_OK = Gauge("vgw_monitor_steering_ok", "1 when per-node steering routes are in place")
_LEVEL = {VipHealth.OK: 0, VipHealth.DEGRADED: 1, VipHealth.DOWN: 2}


class MonitorSettings(VgwSettings):
    metrics_addr: str = "127.0.0.1:9104"
    monitor_steer: bool = Field(default=True, description="Probe through each node (policy routing; needs NET_ADMIN)")
    monitor_netns: str | None = Field(
        default=None, description="Probe from this network namespace (the vantage point) instead of our own"
    )
    monitor_table_base: int = Field(default=31000, ge=256, le=2**31 - 1024)
    monitor_window: int = Field(default=10, ge=3, le=1000, description="Probes per path in the SLI window")
    monitor_fail_after: int = Field(default=3, ge=1, le=100)
    monitor_quorum: float = Field(default=0.5, gt=0, le=1)
    monitor_hold_down_s: float = Field(default=10.0, ge=0, le=3600)
    monitor_request_ttl_s: float = Field(default=30.0, ge=3, le=86400)
    monitor_max_withdrawals_per_min: int = Field(default=3, ge=0, le=1000)
    monitor_judge_interval_s: float = Field(default=0.5, gt=0, le=60)


class MonitorApp:
    def __init__(self, settings: MonitorSettings) -> None:
        self.s = settings
        self.vantage = settings.instance_id
        self.paths: dict[PathKey, ProbePath] = {}
        self.topologies: list[VipTopology] = []
        self.observations: dict[str, PathObservation] = {}
        self.steering = Steering(settings.monitor_table_base, settings.monitor_netns)
        self.judge = Judge(
            self.vantage,
            JudgeParams(
                fail_after=settings.monitor_fail_after,
                quorum=settings.monitor_quorum,
                hold_down_s=settings.monitor_hold_down_s,
                request_ttl_s=settings.monitor_request_ttl_s,
                max_withdrawals_per_min=settings.monitor_max_withdrawals_per_min,
            ),
        )
        self.leading = False
        self.revision: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._bus: Bus | None = None
        self._store: MonitorStore | None = None
        self._views: dict[str, VipView] = {}
        self._routes: dict[str, tuple[str, list[str]]] = {}
        self.announcers = AnnouncerCount()

    async def start(self, rt: Runtime[MonitorSettings]) -> None:
        self._bus = rt.bus
        self._store = await MonitorStore.open(rt.bus)
        reader = await ConfigReader(rt.bus, recheck=rt.settings.config_recheck).open()
        self._tasks = [
            asyncio.create_task(self._follow_config(reader)),
            asyncio.create_task(self._mirror()),
            asyncio.create_task(self._judge_loop()),
            asyncio.create_task(self._keep_steering()),
            asyncio.create_task(self.announcers.follow(rt.bus)),
        ]
        rt.health.add_check("config", lambda: (self.revision is not None, "no config revision read yet"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for p in list(self.paths.values()):
            await p.stop()
        self.paths.clear()
        self.steering.close()

    # -- probing --

    async def _follow_config(self, reader: ConfigReader) -> None:
        async for cr in reader.watch():
            self.revision = cr.revision
            self.announcers.set_config(cr.document)
            await self._reconfigure(cr.document)

    async def _reconfigure(self, doc: ConfigDocument) -> None:
        topologies: list[VipTopology] = []
        wanted: dict[PathKey, tuple[MonitorProbe, int | None]] = {}
        routes: dict[str, tuple[str, list[str]]] = {}
        for vip in doc.vips:
            primary, standby = doc.vip_nodes(vip)
            for node_id in (*primary, *standby):
                node = doc.node(node_id)
                if node is not None:
                    routes.setdefault(node_id, (str(node.external.address.ip), []))[1].append(str(vip.address))
        steer = self.s.monitor_steer
        if steer:
            try:
                # iproute2 calls, one per VIP and node: off the event loop, so probes keep their pace.
                await asyncio.to_thread(self.steering.apply, routes)
                STEERING_OK.set(1)
            except SteeringError as exc:
                log.error("per-node probes disabled: cannot set up policy routing: %s", exc)
                STEERING_OK.set(0)
                steer = False
        for vip in doc.vips:
            primary, standby = doc.vip_nodes(vip)
            for probe in vip.monitor:
                name = probe.probe_name
                topologies.append(
                    VipTopology(
                        vip=vip.address,
                        port=probe.port,
                        protocol=probe.protocol,
                        probe=name,
                        cluster=vip.cluster,
                        primary=tuple(primary),
                        standby=tuple(standby),
                        standby_cluster=doc.standby_cluster_of(vip),
                    )
                )
                wanted[PathKey(str(vip.address), probe.port, name, ROUTED)] = (probe, None)
                if steer and probe.per_node:
                    for node_id in (*primary, *standby):
                        mark = self.steering.mark_of(node_id)
                        if mark is not None:
                            wanted[PathKey(str(vip.address), probe.port, name, node_id)] = (probe, mark)
        for key in [k for k in self.paths if k not in wanted or self.paths[k].probe != wanted[k][0]]:
            await self.paths.pop(key).stop()
        for key, (probe, mark) in wanted.items():
            if key not in self.paths:
                path = ProbePath(
                    key, probe, self.vantage, mark, self.s.monitor_netns, self.s.monitor_window, self._record
                )
                self.paths[key] = path
                path.start()
        self.topologies = topologies
        self._routes = routes if steer else {}
        PATHS.set(len(self.paths))
        log.info("monitoring %d VIP probe(s) over %d path(s)", len(topologies), len(self.paths))

    async def _keep_steering(self) -> None:
        """The kernel drops a table's routes when the vantage point's link flaps; put them back
        (idempotently, without flushing) every 2 s, or per-node probes would silently start
        following the normal routes."""
        while True:
            await asyncio.sleep(2.0)
            if not self._routes:
                continue
            try:
                await asyncio.to_thread(self.steering.apply, self._routes)
                STEERING_OK.set(1)
            except SteeringError as exc:
                STEERING_OK.set(0)
                log.warning("per-node steering routes could not be restored: %s", exc)

    async def _record(self, obs: PathObservation) -> None:
        assert self._store is not None
        self.observations[self._store.obs_key(obs)] = obs
        await self._store.put_observation(obs)

    async def _mirror(self) -> None:
        """Every vantage point's observations, level-triggered."""
        assert self._store is not None
        async for ev in self._store.observations.watch("obs.>"):
            if isinstance(ev, Snapshot):
                self.observations = {k: e.value for k, e in ev.entries.items()}
            elif isinstance(ev, Change):
                if ev.entry is None:
                    self.observations.pop(ev.key, None)
                else:
                    self.observations[ev.key] = ev.entry.value

    # -- judging (leader only) --

    async def _put_view(self, view: VipView, now: datetime) -> None:
        """Store the view when it changes, and every few seconds so readers see it is current."""
        assert self._store is not None
        key = view_key(view.vip, view.port)
        last = self._views.get(key)
        same = last is not None and last.model_copy(update={"updated_at": now, "evidence": view.evidence}) == view
        if same and last is not None and (now - last.updated_at).total_seconds() < 5:
            return
        self._views[key] = view
        await self._store.put_view(key, view)

    def _leader(self, now: datetime) -> str:
        fresh = {
            o.vantage
            for o in self.observations.values()
            if (now - o.updated_at).total_seconds() <= 3 * o.interval_s + 1.0
        }
        return min(fresh | {self.vantage})

    async def _judge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.monitor_judge_interval_s)
            try:
                await self._judge_once()
            except Exception:
                log.exception("judging failed")

    async def _judge_once(self) -> None:
        assert self._store is not None and self._bus is not None
        now = datetime.now(UTC)
        leading = self._leader(now) == self.vantage
        if leading and not self.leading:
            self.judge.load(await self._store.active_requests())
            log.info("leading the monitor: %d request(s) in force", len(self.judge.active))
        self.leading = leading
        LEADER.set(1 if leading else 0)
        self.announcers.export(leading)
        if not leading:
            return
        for topo in self.topologies:
            obs = [o for o in self.observations.values() if str(o.vip) == str(topo.vip) and o.port == topo.port]
            j = self.judge.judge(topo, obs, now)
            # Events first (the bus's outbox keeps them through a NATS blip), then the store, item by
            # item: a failed write must not swallow the rest of the round.
            for ev in j.publish:
                await self._bus.publish(ev)
                REQUESTS.labels("node" if isinstance(ev, NodeWithdrawRequest) else "cluster", ev.action.value).inc()
                log.warning("%s %s: %s", ev.action.value, ev.ce_subject(), ev.reason)
            for key, req in j.store.items():
                try:
                    await self._store.put_request(key, req)
                except Exception as exc:
                    log.warning("could not store request %s: %s", key, exc)
            if j.changed:
                await self._bus.publish(
                    MonitorVipStatus(
                        vip=topo.vip,
                        port=topo.port,
                        protocol=topo.protocol,
                        status=j.view.status,
                        previous_status=j.previous,
                        monitor=self.vantage,
                        detail=j.view.detail,
                        evidence=j.view.evidence,
                    )
                )
                log.info("VIP %s:%d is %s: %s", topo.vip, topo.port, j.view.status.value, j.view.detail)
            if j.view.vantages:
                HEALTH.labels(str(topo.vip), str(topo.port)).set(_LEVEL[j.view.status])
                try:
                    await self._put_view(j.view, now)
                except Exception as exc:
                    log.warning("could not store the view of %s:%d: %s", topo.vip, topo.port, exc)
        IN_FORCE.set(len(self.judge.active))
