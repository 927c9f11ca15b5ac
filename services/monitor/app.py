"""vgw-monitor: probes every VIP from this vantage point, through the routed path and through each
node; shares observations; the leading instance judges and publishes (docs/monitor.md).

The leader is the holder of a KV lease (:mod:`vgw.lease`): acquired with a create, renewed with a
revision-checked update, and judged lost by the holder's own monotonic clock -- no wall clock is
compared across machines. The others only probe and share. A new leader loads the requests in force
from ``vgw_requests`` and the last minute's withdrawals from ``vgw_withdrawals``, and carries on.

Observations of other vantage points are rebased onto this instance's clock when they arrive (their
times shifted by "received here" minus "written there"), so a vantage point whose clock is off is
neither forgotten as stale nor kept when it stops writing. An observation read in a snapshot (start,
reconnect) counts once its vantage point has written it again: its age is unknown until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from prometheus_client import Counter, Gauge
from pydantic import Field

from vgw.bus import Bus
from vgw.config import ConfigDocument, MonitorProbe
from vgw.config.store import ConfigReader
from vgw.events import MonitorVipStatus, NodeWithdrawRequest, ProbeResult, VipHealth
from vgw.lease import Lease, lease_bucket
from vgw.monitoring import ROUTED, ActiveRequest, PathObservation, VipView, view_key
from vgw.runtime import Runtime
from vgw.settings import VgwSettings
from vgw.store import Change, Snapshot
from vgw.withdraw_requests import Withdrawal, entry_key

from .announcers import AnnouncerCount
from .judge import Judge, JudgeParams, Request, VipTopology, verdict_of
from .paths import PathKey, ProbePath, utcnow
from .steering import Steering, SteeringError
from .store import Fenced, MonitorStore

log = logging.getLogger("vgw.monitor")

HEALTH = Gauge("vgw_monitor_vip_health", "Judged VIP status: 0 ok, 1 degraded, 2 down (leader only)", ["vip", "port"])
LEADER = Gauge("vgw_monitor_leader", "1 while this instance judges and publishes")
REQUESTS = Counter("vgw_monitor_requests_total", "Withdraw requests published", ["kind", "action"])
IN_FORCE = Gauge("vgw_monitor_requests_in_force", "Withdraw requests in force (leader only)")
PATHS = Gauge("vgw_monitor_paths", "Probe paths run by this vantage point")
STEERING_OK = Gauge("vgw_monitor_steering_ok", "1 when per-node steering routes are in place")
T = TypeVar("T")
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
    monitor_judge_interval_s: float = Field(
        default=0.5, gt=0, le=60, description="Judging period; a path's verdict changing judges at once"
    )
    monitor_lease_s: float = Field(
        default=5.0,
        ge=1,
        le=60,
        description="Leader lease: a leader that cannot renew stops within it; another takes over after it",
    )


_TIMES = ("updated_at", "failing_since", "last_ok_at", "succeeding_since")


def rebase(o: PathObservation, delta: timedelta) -> PathObservation:
    """``o`` with every time shifted by ``delta`` (onto another clock)."""
    if not delta:
        return o
    return o.model_copy(update={f: getattr(o, f) + delta for f in _TIMES if getattr(o, f) is not None})


class MonitorApp:
    def __init__(self, settings: MonitorSettings, *, wallclock: Callable[[], datetime] = utcnow) -> None:
        self.s = settings
        self.wallclock = wallclock
        """This instance's wall clock: observation times and request expiry (never leadership)."""
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
        self._stopped = False
        self._term: int | None = None
        """The lease term we lead in (took the lead: read the requests in force); None when not."""
        self.revision: int | None = None
        self.lease: Lease | None = None
        self._bus: Bus | None = None
        self._store: MonitorStore | None = None
        self._views: dict[str, VipView] = {}
        self._routes: dict[str, tuple[str, list[str]]] = {}
        self._confirmed: set[str] = set()
        """Keys of other vantage points' observations written since our snapshot (their age is known)."""
        self._verdicts: dict[str, str] = {}
        self._judge_now = asyncio.Event()
        self._paths_changed = asyncio.Event()
        self.announcers = AnnouncerCount()

    async def start(self, rt: Runtime[MonitorSettings]) -> None:
        self._bus = rt.bus
        self._store = await MonitorStore.open(rt.bus, self.s.monitor_request_ttl_s)
        self.lease = await Lease(rt.bus, lease_bucket("monitor"), self.vantage, lease_s=self.s.monitor_lease_s).open()
        reader = await ConfigReader(rt.bus, recheck=rt.settings.config_recheck).open()
        lease, sup = self.lease, rt.supervisor
        sup.spawn("lease", lease.run)
        sup.spawn("config", lambda: self._follow_config(reader))
        sup.spawn("probes", self._run_probes)
        sup.spawn("observations", self._mirror)
        sup.spawn("withdrawals", self._mirror_withdrawals)
        sup.spawn("judge", self._judge_loop)
        sup.spawn("steering", self._keep_steering)
        sup.spawn("announcers", lambda: self.announcers.follow(rt.bus))
        rt.health.add_check("config", lambda: (self.revision is not None, "no config revision read yet"))

    async def stop(self) -> None:
        # Stop acting at once; the lease itself is released when the runtime cancels its task.
        self._stopped = True
        self._term = None
        LEADER.set(0)
        # Emptied first, so the probe runner (still running until the runtime cancels it) does not
        # start again the paths stopped here.
        paths = list(self.paths.values())
        self.paths.clear()
        self._paths_changed.set()
        for p in paths:
            await p.stop()
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
                    key, probe, self.vantage, mark, self.s.monitor_netns, self.s.monitor_window, self._record,
                    fail_after=self.s.monitor_fail_after, wallclock=self.wallclock,
                )  # fmt: skip
                self.paths[key] = path
                path.start()
        self._paths_changed.set()
        self.topologies = topologies
        self._routes = routes if steer else {}
        PATHS.set(len(self.paths))
        log.info("monitoring %d VIP probe(s) over %d path(s)", len(topologies), len(self.paths))

    async def _run_probes(self) -> None:
        """Keeps every probe path's task running. A path task that ends on an exception ends this
        task with it (the supervisor logs, counts and restarts it), and the restart starts that path
        again; the other paths go on probing meanwhile."""
        while True:
            self._paths_changed.clear()
            for path in list(self.paths.values()):
                if path.task is None or path.task.done():
                    path.start()
            running = {p.task for p in self.paths.values() if p.task is not None}
            changed = asyncio.ensure_future(self._paths_changed.wait())
            try:
                done, _ = await asyncio.wait({*running, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
            for t in done:
                if t is not changed and not t.cancelled() and t.exception() is not None:
                    raise RuntimeError(f"{t.get_name()} failed") from t.exception()

    async def _keep_steering(self) -> None:
        """The kernel drops a table's routes when the vantage point's link flaps; put them back
        (idempotently, without flushing) every 2 s, or per-node probes would silently start
        following the normal routes."""
        while True:
            await asyncio.sleep(2.0)
            await self._restore_steering()

    async def _restore_steering(self) -> None:
        if not self._routes:
            return
        try:
            await asyncio.to_thread(self.steering.apply, self._routes)
            STEERING_OK.set(1)
        except SteeringError as exc:
            STEERING_OK.set(0)
            log.warning("per-node steering routes could not be restored: %s", exc)

    def _siblings(self, obs: PathObservation) -> list[ProbePath]:
        return [
            p
            for k, p in self.paths.items()
            if k.vip == str(obs.vip) and k.port == obs.port and k.probe == obs.probe and k.path != obs.path
        ]

    def _note_verdict(self, key: str, obs: PathObservation) -> None:
        """Judge at once when a path's verdict changes, not at the next judging period."""
        v = verdict_of(obs, self.s.monitor_fail_after)
        if self._verdicts.get(key) != v:
            self._verdicts[key] = v
            self._judge_now.set()

    async def _record(self, obs: PathObservation) -> None:
        assert self._store is not None
        key = self._store.obs_key(obs)
        self.observations[key] = obs
        self._confirmed.add(key)
        self._note_verdict(key, obs)
        if obs.last_result is not ProbeResult.OK and obs.consecutive_failures <= self.s.monitor_fail_after:
            # This path is failing but has no verdict yet: have the VIP's other paths probed now, so
            # whether another node still works is known by the time the verdict is (judge.py).
            for p in self._siblings(obs):
                p.poke()
        await self._store.put_observation(obs)

    async def _mirror(self) -> None:
        """Every vantage point's observations, level-triggered; another vantage point's rebased onto
        our clock when it arrives (see the module's docstring)."""
        assert self._store is not None
        async for ev in self._store.observations.watch("obs.>"):
            self._on_observations(ev)

    def _on_observations(self, ev: Snapshot[PathObservation] | Change[PathObservation]) -> None:
        if isinstance(ev, Snapshot):
            self.observations = {k: e.value for k, e in ev.entries.items()}
            # Our own are in our clock; another vantage point's count once written again.
            self._confirmed = {k for k, o in self.observations.items() if o.vantage == self.vantage}
        elif isinstance(ev, Change):
            if ev.entry is None:
                self.observations.pop(ev.key, None)
                self._confirmed.discard(ev.key)
                self._verdicts.pop(ev.key, None)
                return
            o = ev.entry.value
            if o.vantage != self.vantage:
                o = rebase(o, self.wallclock() - o.updated_at)
            self.observations[ev.key] = o
            self._confirmed.add(ev.key)
            self._note_verdict(ev.key, o)

    async def _mirror_withdrawals(self) -> None:
        """The last minute's new withdrawals, whoever made them: the rate limit's count."""
        assert self._store is not None
        self.judge.recorded_withdrawals = None
        try:
            async for ev in self._store.withdrawals.watch(">"):
                self._on_withdrawals(ev)
        finally:
            self.judge.recorded_withdrawals = None  # unknown until the next snapshot

    def _on_withdrawals(self, ev: Snapshot[Withdrawal] | Change[Withdrawal]) -> None:
        if isinstance(ev, Snapshot):
            self.judge.recorded_withdrawals = {e.value.request_id for e in ev.entries.values()}
        elif self.judge.recorded_withdrawals is not None:
            rid = ev.key.removeprefix("w.")
            if ev.entry is None:
                self.judge.recorded_withdrawals.discard(rid)
            else:
                self.judge.recorded_withdrawals.add(ev.entry.value.request_id)

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

    async def _judge_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._judge_now.wait(), self.s.monitor_judge_interval_s)
            self._judge_now.clear()
            await self._judge_once()

    def _judged_observations(self) -> list[PathObservation]:
        return [o for k, o in self.observations.items() if k in self._confirmed]

    async def _take_lead(self) -> bool:
        """Become the leader: read the requests in force. False (try again next round) when the
        store cannot be read now."""
        assert self._store is not None
        try:
            active = await self._store.requests_in_force()
        except Exception as exc:
            log.warning("lease held, but the requests in force cannot be read (%s); not leading yet", exc)
            return False
        self.judge.load(active, now=self.wallclock())
        log.info("leading the monitor (term %s): %d request(s) in force", self.lease and self.lease.token, len(active))
        return True

    @property
    def leading(self) -> bool:
        """True while the lease is held (by our own monotonic clock) in the term we took the lead in.
        Turns False by itself when the lease runs out, even while a round is blocked on NATS."""
        return self._term is not None and self.lease is not None and self.lease.held and self.lease.token == self._term

    def _still_leading(self) -> bool:
        """Checked before every write."""
        if self.leading:
            return True
        if self._term is not None:
            log.warning("leadership lost: publishing nothing more")
        self._step_down()
        return False

    def _step_down(self) -> None:
        self._term = None
        LEADER.set(0)

    async def _bounded(self, aw: Awaitable[T]) -> T:
        """A leader's write, given no longer than the lease has left: a write that would land after
        the lease ran out is abandoned (and, for the requests in force, refused by their revision)."""
        assert self.lease is not None
        async with asyncio.timeout(max(0.01, self.lease.remaining_s())):
            return await aw

    async def _judge_once(self) -> None:
        assert self._store is not None and self._bus is not None and self.lease is not None
        now = self.wallclock()
        if self._stopped or not self.lease.held:
            self._step_down()
        elif self._term != self.lease.token and await self._take_lead():
            self._term = self.lease.token
        leading = self.leading
        LEADER.set(1 if leading else 0)
        self.announcers.export(leading)
        if not leading:
            return
        observations = self._judged_observations()
        for topo in self.topologies:
            obs = [o for o in observations if str(o.vip) == str(topo.vip) and o.port == topo.port]
            j = self.judge.judge(topo, obs, now)
            if not await self._publish_round(j.publish, j.store):
                return
            if j.changed:
                if not self._still_leading():
                    return
                status = MonitorVipStatus(
                    vip=topo.vip,
                    port=topo.port,
                    protocol=topo.protocol,
                    status=j.view.status,
                    previous_status=j.previous,
                    monitor=self.vantage,
                    detail=j.view.detail,
                    evidence=j.view.evidence,
                )
                try:
                    await self._bounded(self._bus.publish(status))
                except TimeoutError:
                    return  # the lease ran out meanwhile
                log.info("VIP %s:%d is %s: %s", topo.vip, topo.port, j.view.status.value, j.view.detail)
            if j.view.vantages:
                HEALTH.labels(str(topo.vip), str(topo.port)).set(_LEVEL[j.view.status])
                if not self._still_leading():
                    return
                try:
                    await self._bounded(self._put_view(j.view, now))
                except Exception as exc:
                    log.warning("could not store the view of %s:%d: %s", topo.vip, topo.port, exc)
        IN_FORCE.set(len(self.judge.active))

    async def _publish_round(self, publish: list[Request], store: dict[str, ActiveRequest | None]) -> bool:
        """Events first (the bus's outbox keeps them through a NATS blip), then the store item by
        item: a failed write must not swallow the rest of the round. Each step only while the lease
        is held; False when leadership was lost (fenced) on the way."""
        assert self._store is not None and self._bus is not None and self.lease is not None
        token = self.lease.token or 0
        for ev in publish:
            if not self._still_leading():
                return False
            try:
                await self._bounded(self._bus.publish(ev))
            except TimeoutError:
                log.warning("the lease ran out while publishing %s: not published", ev.ce_subject())
                return False
            REQUESTS.labels("node" if isinstance(ev, NodeWithdrawRequest) else "cluster", ev.action.value).inc()
            log.warning("%s %s: %s", ev.action.value, ev.ce_subject(), ev.reason)
        for key, req in store.items():
            if not self._still_leading():
                return False
            try:
                if req is None:
                    await self._bounded(self._store.delete_request(key))
                    continue
                await self._bounded(self._store.put_request(req, f"monitor/{self.vantage}", token))
                if req.issued_at == req.refreshed_at:  # a new withdrawal: it counts for the rate limit
                    await self._bounded(
                        self._store.record_withdrawal(req.request_id, entry_key(req.kind, req.target, req.vip), token)
                    )
            except Fenced as exc:
                log.error("another monitor leads (%s): stepping down", exc)
                self._step_down()
                return False
            except Exception as exc:
                log.warning("could not store request %s: %s", key, exc)
        return True
