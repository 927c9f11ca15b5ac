"""The decision per VIP on one node: gates, watermark hysteresis, damping and the withdrawal limit.

Pure logic over plain inputs (config view, health entries, the last ``dataplane.status``, withdraw
requests, monotonic time), so it is unit-tested without NATS or BGP. :class:`Decider` keeps the
per-VIP memory (current state, hysteresis, flap penalty) between evaluations.

Gates, in the order their failure is reported as the reason:

1. ``node_active``  -- the node is not isolated, nor drained             -> ``node_isolated|node_drained``
2. ``vip_enabled``  -- the VIP is enabled                                 -> ``vip_disabled``
3. ``requests``     -- no node or cluster withdraw request in force       -> ``*_withdraw_request``
                       (a request not from ``operator/...`` is not honoured when it would withdraw
                       the last node -- or, for a cluster, the last cluster -- announcing the VIP)
4. ``forwarder``    -- a ``dataplane.status`` fresher than the bound, up  -> ``forwarder_stale|down``
5. ``programmed``   -- the VIP is programmed at (or after) the revision that last changed it
                                                                          -> ``not_programmed``
6. ``health``       -- watermarks with hysteresis                         -> ``below_low_watermark``

Gates 1-5 withdraw at once. Gate 6 withdraws (policy ``withdraw``) or announces with the
deprioritised attributes (policy ``deprioritise``); health-driven withdrawals are limited per minute,
and after a health-driven worsening the VIP must be healthy for the hold-down (doubling with the
decaying flap penalty) before it is announced normally again (reason ``damped`` meanwhile).

A draining node (config state ``draining``, :class:`vgw.config.model.NodeDrain`) announces every VIP
whose gates hold with the deprioritised attributes (reason ``node_draining``) until the drain
completes -- the node's forwarder reports fewer connections than the threshold (``idle``), or the
timeout passed (``timeout``) -- and then withdraws them (``node_drained``). The completion is latched
per drain (its ``started_at``) and kept in ``vgw_routes`` (:class:`vgw.routes.DrainMark`), so it
survives a restart; :attr:`Decider.drain_events` lists the drain's edges for the caller to publish.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from opentelemetry.trace import SpanContext

from vgw.config import Node, NodeService, NodeView, Vip
from vgw.config.model import NodeDrain, Role
from vgw.events import (
    BackendState,
    BgpAttributes,
    ClusterWithdrawRequest,
    DataplaneStatus,
    DrainEndReason,
    ForwarderState,
    NodeWithdrawRequest,
    RequestAction,
    RouteReason,
    RouteState,
)
from vgw.health import HealthEntry
from vgw.naming import IP
from vgw.routes import DrainMark, GateName, GateStatus, RouteEntry

HEALTH_REASONS = frozenset({RouteReason.BELOW_LOW_WATERMARK, RouteReason.DAMPED})


@dataclass(frozen=True, slots=True)
class Cause:
    """The event behind an input: its id, trace context and when it arrived (monotonic)."""

    event_id: str
    span: SpanContext | None = None
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class ForwarderObs:
    status: DataplaneStatus
    received_at: float
    cause: Cause


@dataclass(frozen=True, slots=True)
class DampingPolicy:
    hold_down_s: float = 10.0
    hold_down_max_s: float = 300.0
    half_life_s: float = 60.0
    withdrawals_per_min: int = 20

    def hold(self, penalty: float) -> float:
        if self.hold_down_s <= 0:
            return 0.0
        hold: float = self.hold_down_s * 2.0 ** max(0.0, penalty - 1.0)
        return min(hold, max(self.hold_down_max_s, self.hold_down_s))


# --- withdraw requests ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Req:
    request_id: str
    requester: str
    reason: str
    expires_at: datetime | None
    cause: Cause

    @property
    def operator(self) -> bool:
        """Operators' requests are always honoured; others' (the monitor's) are guarded."""
        return self.requester.startswith("operator/")


@dataclass(frozen=True, slots=True)
class Announcers:
    """Who else announces a VIP, from the other nodes' ``vgw_routes`` entries (for the guard that
    no automatic request withdraws the last announcer)."""

    elsewhere: int
    """Other nodes announcing it (normal or deprioritised)."""
    other_clusters: int
    """Of those, nodes outside this node's cluster."""


class Requests:
    """Node and cluster withdraw requests in force. The latest request per (target, VIP or all)
    wins; a ``restore`` for every VIP (``vip`` absent) clears all of that target's requests; a
    request lapses at ``expires_at``."""

    def __init__(self) -> None:
        self._node: dict[tuple[str, IP | None], _Req] = {}
        self._cluster: dict[tuple[str, IP | None], _Req] = {}

    def apply(self, ev: NodeWithdrawRequest | ClusterWithdrawRequest, cause: Cause) -> None:
        if isinstance(ev, NodeWithdrawRequest):
            table, target = self._node, ev.node
        else:
            table, target = self._cluster, ev.cluster
        if ev.action == RequestAction.RESTORE:
            if ev.vip is None:
                for k in [k for k in table if k[0] == target]:
                    del table[k]
            else:
                table.pop((target, ev.vip), None)
            return
        table[(target, ev.vip)] = _Req(ev.request_id, ev.requester, ev.reason, ev.expires_at, cause)

    @staticmethod
    def _find(table: dict[tuple[str, IP | None], _Req], target: str, vip: IP, now: datetime) -> _Req | None:
        for key in ((target, vip), (target, None)):
            r = table.get(key)
            if r is not None and (r.expires_at is None or r.expires_at > now):
                return r
        return None

    def node(self, node: str, vip: IP, now: datetime) -> _Req | None:
        return self._find(self._node, node, vip, now)

    def cluster(self, cluster: str, vip: IP, now: datetime) -> _Req | None:
        return self._find(self._cluster, cluster, vip, now)

    def __len__(self) -> int:
        return len(self._node) + len(self._cluster)


# --- drains ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrainStatus:
    """The node's drain at one evaluation."""

    started_at: datetime
    deadline: datetime
    timeout_s: float
    threshold: int
    connections: int | None
    """The forwarder's connections without half-open ones; None while unknown (no fresh status
    carrying them): then only the timeout ends the drain."""
    completed: DrainEndReason | None = None
    completed_at: datetime | None = None

    @property
    def mark(self) -> DrainMark:
        return DrainMark(
            started_at=self.started_at,
            deadline=self.deadline,
            threshold=self.threshold,
            completed=self.completed,
            completed_at=self.completed_at,
        )

    def left_s(self, now_wall: datetime) -> float:
        return max(0.0, (self.deadline - now_wall).total_seconds())


@dataclass(frozen=True, slots=True)
class DrainEdge:
    """A drain started, or ended (``reason``): published as ``node.drain.started|completed``."""

    status: DrainStatus
    reason: DrainEndReason | None
    """None: started."""
    detail: str
    cause: Cause | None


def drain_connections(fwd: ForwarderObs | None, now: float, stale_s: float) -> int | None:
    """What a drain counts: the connections of a fresh ``up`` status, half-open ones left out."""
    if fwd is None or now - fwd.received_at > stale_s or fwd.status.forwarder != ForwarderState.UP:
        return None
    st = fwd.status
    if st.active_connections is None:
        return None
    return max(0, st.active_connections - (st.half_open_connections or 0))


# --- decisions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    vip: IP
    role: Role
    state: RouteState
    reason: RouteReason
    detail: str
    attributes: BgpAttributes
    gates: dict[GateName, GateStatus]
    healthy: int
    total: int
    below: bool
    penalty: float
    damped_until: float | None
    """Monotonic time the VIP may be announced again, while damped."""
    cause: Cause | None
    health_withdrawal: bool = False
    """This decision is a health-driven withdrawal (counted against the per-minute limit)."""
    drain: DrainMark | None = None
    """The node's drain, while it drains."""

    @property
    def signature(self) -> tuple[object, ...]:
        """What makes a decision different enough to be written again (no timestamps)."""
        gates = tuple(sorted((k, v.ok) for k, v in self.gates.items()))
        return (
            self.state,
            self.reason,
            self.attributes,
            gates,
            self.healthy,
            self.total,
            self.below,
            self.role,
            self.drain,
        )


@dataclass
class VipMemory:
    state: RouteState = RouteState.WITHDRAWN
    reason: RouteReason = RouteReason.REMOVED
    attributes: BgpAttributes = field(default_factory=BgpAttributes)
    since: datetime | None = None
    below: bool = True
    healthy_since: float = 0.0
    hold_pending: bool = False
    penalty: float = 0.0
    penalty_at: float = 0.0
    written: tuple[object, ...] | None = None
    """Signature of the decision last written to KV."""


def combine_attributes(vip: Vip, role: Role, worse: bool, next_hop: IP | None) -> BgpAttributes:
    """The BGP attributes of a state: the base (normal, or standby on a standby node), combined with
    the deprioritised ones when ``worse`` (highest MED, lowest local-pref, most prepends); the VIP's
    communities are always added."""
    pol = vip.bgp
    parts = [pol.standby if role == "standby" else pol.normal]
    if worse:
        parts.append(pol.deprioritised)
    meds = [p.med for p in parts if p.med is not None]
    prefs = [p.local_pref for p in parts if p.local_pref is not None]
    communities = list(dict.fromkeys([*pol.communities, *(c for p in parts for c in p.communities)]))
    return BgpAttributes(
        next_hop=next_hop,
        med=max(meds) if meds else None,
        local_pref=min(prefs) if prefs else None,
        communities=communities,
        as_path_prepend=max(p.as_path_prepend for p in parts),
    )


def next_hop_for(node: Node, version: int) -> IP | None:
    """The next hop announced with the node's VIPs of IP ``version``: its ``bgp.next_hop``, else its
    external address, whichever is of that family. None when neither is (an IPv6 VIP on a node
    addressed in IPv4): the speaker then announces ``next-hop self``, which ExaBGP fills in with the
    session's own address (the IPv6 peer's ``local_address``). A next hop of the other family is
    never announced: the router refuses it (BIRD: "Invalid NEXT_HOP attribute - mismatched address
    family") and drops the route, while routectl would record the VIP as announced."""
    bgp = node.bgp
    for hop in (bgp.next_hop if bgp is not None else None, node.external.address.ip):
        if hop is not None and hop.version == version:
            return hop
    return None


@dataclass(frozen=True, slots=True)
class ServiceKeys:
    """A service's usable backends as what counting their health needs: the key of each checked
    one (computed once per config revision: formatting 10,000 keys per evaluation cost ~60 ms),
    the number of unchecked ones, and the initial state of backends without an entry."""

    keys: tuple[str, ...]
    unchecked: int
    initial_up: bool


def service_keys(ns: NodeService) -> ServiceKeys:
    keys: list[str] = []
    unchecked = 0
    for b in ns.service.backends:
        if b.state == "disabled":
            continue
        key = ns.backend_health_key(b)
        if key is None or ns.health_check is None:
            unchecked += 1
        else:
            keys.append(key)
    initial_up = ns.health_check is not None and ns.health_check.initial_state == BackendState.UP.value
    return ServiceKeys(tuple(keys), unchecked, initial_up)


def count_healthy(keys: list[ServiceKeys], health: Mapping[str, HealthEntry]) -> list[tuple[int, int]]:
    """(healthy, usable) backends per service: disabled backends are not usable; unchecked services'
    backends are healthy; a backend without a health entry takes its check's ``initial_state``."""
    out = []
    up = BackendState.UP
    for sk in keys:
        healthy = sk.unchecked
        for key in sk.keys:
            e = health.get(key)
            if (e.state == up) if e is not None else sk.initial_up:
                healthy += 1
        out.append((healthy, sk.unchecked + len(sk.keys)))
    return out


class Decider:
    """Decisions for every VIP of one node, with memory between evaluations."""

    def __init__(self, node_id: str, damping: DampingPolicy, stale_s: float, restart_grace_s: float = 0.0) -> None:
        self.node_id = node_id
        self.damping = damping
        self.stale_s = stale_s
        # A forwarder that keeps its connection tables across a restart is down for well under a
        # second when restarted: withdrawing would move its flows (and damp the VIP) for nothing.
        self.restart_grace_s = restart_grace_s
        self._fwd_down_since: float | None = None  # first status not "up" after an "up" one
        self.mem: dict[IP, VipMemory] = {}
        self._keys_view: NodeView | None = None  # the view self._keys was computed for
        self._keys: dict[int, ServiceKeys] = {}
        self._withdrawals: deque[float] = deque()
        self.drain: DrainStatus | None = None
        """The node's drain at the last evaluation (None: not draining)."""
        self.drain_events: list[DrainEdge] = []
        """Drain edges of the last evaluation, for the caller to publish."""
        self._drain_known: datetime | None = None
        """started_at of the drain whose start is known (announced, or read back from KV)."""
        self._drain_done: tuple[datetime, DrainEndReason, datetime] | None = None
        """(started_at, reason, when) of the completed drain: completion is latched per drain."""

    # -- restart safety --

    def restore(self, entry: RouteEntry, now: float) -> None:
        """Seed a VIP's memory from its KV entry before the first decision (hysteresis and damping
        survive a restart; the announced state does not: a new speaker starts empty)."""
        m = self.mem.setdefault(entry.vip, VipMemory())
        m.below = entry.below_low_watermark
        m.penalty = entry.flap_penalty
        m.penalty_at = now
        m.hold_pending = entry.reason in HEALTH_REASONS
        m.healthy_since = now
        d = entry.drain
        if d is not None:
            self._drain_known = d.started_at
            if d.completed is not None:
                self._drain_done = (d.started_at, d.completed, d.completed_at or d.deadline)

    # -- the node's drain --

    def _drain_status(
        self,
        view: NodeView | None,
        fwd: ForwarderObs | None,
        config_cause: Cause | None,
        now: float,
        now_wall: datetime,
    ) -> DrainStatus | None:
        """The node's drain now; records its edges in :attr:`drain_events`."""
        nd: NodeDrain | None = view.draining if view is not None else None
        prev = self.drain
        if nd is None:
            if self._drain_known is not None and self._drain_done is None:
                ended = prev or DrainStatus(self._drain_known, self._drain_known, 0.0, 0, None)
                why = "the node is no longer draining (restored, isolated or removed) before the drain completed"
                if view is not None:
                    why = f"the node is {view.node.state} again before the drain completed"
                self.drain_events.append(DrainEdge(ended, DrainEndReason.CANCELLED, why, config_cause))
            self._drain_known = self._drain_done = None
            return None
        conns = drain_connections(fwd, now, self.stale_s)
        status = DrainStatus(nd.started_at, nd.deadline, nd.timeout, nd.threshold, conns)
        if self._drain_known != nd.started_at:
            if self._drain_known is not None and self._drain_done is None and prev is not None:
                # restored and drained again between two evaluations: the old drain ended unfinished
                why = "a new drain replaced it before it completed"
                self.drain_events.append(DrainEdge(prev, DrainEndReason.CANCELLED, why, config_cause))
            self._drain_known = nd.started_at
            self.drain_events.append(DrainEdge(status, None, "drain started", config_cause))
        done = self._drain_done
        if done is not None and done[0] != nd.started_at:
            done = self._drain_done = None
        if done is None:
            reason: DrainEndReason | None = None
            if now_wall >= nd.deadline:
                reason = DrainEndReason.TIMEOUT
                detail = f"timeout after {nd.timeout:g}s with {_conns(conns)} (threshold {nd.threshold})"
                cause = config_cause
            elif conns is not None and conns < nd.threshold:
                reason = DrainEndReason.IDLE
                detail = f"idle: {_conns(conns)}, below the threshold of {nd.threshold}"
                cause = fwd.cause if fwd is not None else None
            if reason is not None:
                done = self._drain_done = (nd.started_at, reason, now_wall)
                ended = DrainStatus(nd.started_at, nd.deadline, nd.timeout, nd.threshold, conns, reason, now_wall)
                self.drain_events.append(DrainEdge(ended, reason, detail, cause))
        if done is not None:
            status = DrainStatus(nd.started_at, nd.deadline, nd.timeout, nd.threshold, conns, done[1], done[2])
        return status

    # -- helpers --

    def _decay(self, m: VipMemory, now: float) -> float:
        if m.penalty > 0 and now > m.penalty_at:
            m.penalty *= 2.0 ** (-(now - m.penalty_at) / self.damping.half_life_s)
            if m.penalty < 0.01:
                m.penalty = 0.0
        m.penalty_at = now
        return m.penalty

    def _withdrawal_allowed(self, now: float) -> bool:
        limit = self.damping.withdrawals_per_min
        while self._withdrawals and now - self._withdrawals[0] >= 60.0:
            self._withdrawals.popleft()
        return limit <= 0 or len(self._withdrawals) < limit

    def _track_forwarder_down(self, fwd: ForwarderObs | None) -> None:
        if fwd is None or fwd.status.forwarder == ForwarderState.UP:
            self._fwd_down_since = None
        elif self._fwd_down_since is None:
            self._fwd_down_since = fwd.received_at

    def _in_restart_grace(self, st: DataplaneStatus, announced: bool, now: float) -> float | None:
        """Seconds the forwarder has been down, when that is still within the restart grace: it was
        up, it keeps its connection tables across a restart, and the VIP is announced."""
        since = self._fwd_down_since
        if not announced or self.restart_grace_s <= 0 or st.conn_state_kept is not True or since is None:
            return None
        down_for = now - since
        return down_for if down_for < self.restart_grace_s else None

    def _forwarder_gate(
        self, vip: Vip, fwd: ForwarderObs | None, vip_rev: int, announced: bool, now: float
    ) -> tuple[GateStatus, GateStatus, RouteReason | None, Cause | None]:
        if fwd is None:
            return (
                GateStatus(ok=False, detail="no dataplane.status received"),
                GateStatus(ok=False, detail="unknown"),
                RouteReason.FORWARDER_STALE,
                None,
            )
        st, age = fwd.status, now - fwd.received_at
        if age > self.stale_s:
            detail = f"last dataplane.status {age:.1f}s ago (bound {self.stale_s:g}s)"
            return GateStatus(ok=False, detail=detail), GateStatus(ok=False), RouteReason.FORWARDER_STALE, fwd.cause
        if st.forwarder != ForwarderState.UP:
            down_for = self._in_restart_grace(st, announced, now)
            if down_for is not None:
                detail = (f"forwarder {st.forwarder.value} for {down_for:.1f}s, within the restart grace "
                          f"({self.restart_grace_s:g}s: it keeps its connections across a restart)")  # fmt: skip
                return (
                    GateStatus(ok=True, detail=detail),
                    GateStatus(ok=True, detail="as before the restart"),
                    None,
                    None,
                )
            detail = f"forwarder {st.forwarder.value}"
            return GateStatus(ok=False, detail=detail), GateStatus(ok=False), RouteReason.FORWARDER_DOWN, fwd.cause
        fgate = GateStatus(ok=True, detail=f"up, status {age:.1f}s old")
        applied = st.config_revision if st.config_revision is not None else -1
        if vip.address not in st.vips:
            detail = f"not in the forwarder's VIPs (applied revision {st.config_revision})"
            return fgate, GateStatus(ok=False, detail=detail), RouteReason.NOT_PROGRAMMED, fwd.cause
        if applied < vip_rev and not announced:
            detail = f"forwarder at revision {st.config_revision}, VIP changed at {vip_rev}"
            return fgate, GateStatus(ok=False, detail=detail), RouteReason.NOT_PROGRAMMED, fwd.cause
        return fgate, GateStatus(ok=True, detail=f"programmed at revision {st.config_revision}"), None, None

    # -- the decision --

    def decide(
        self,
        view: NodeView | None,
        vip_revs: Mapping[IP, int],
        health: Mapping[str, HealthEntry],
        fwd: ForwarderObs | None,
        requests: Requests,
        health_causes: Mapping[str, Cause],
        config_cause: Cause | None,
        now: float,
        now_wall: datetime,
        announcers: Mapping[IP, Announcers] | None = None,
    ) -> list[Decision]:
        """Evaluate every VIP of the node (and withdraw the ones it no longer serves); updates the
        memory as if every returned decision is applied."""
        self.drain_events = []
        self._track_forwarder_down(fwd)
        self.drain = drain = self._drain_status(view, fwd, config_cause, now, now_wall)
        out: list[Decision] = []
        seen: set[IP] = set()
        next_hops: dict[int, IP | None] = {}
        if view is not None:
            next_hops = {version: next_hop_for(view.node, version) for version in (4, 6)}
        services_of: dict[IP, list[NodeService]] = {}
        if view is not None:
            for ns in view.services:
                services_of.setdefault(ns.vip.address, []).append(ns)
            if self._keys_view is not view:
                self._keys_view, self._keys = view, {id(ns): service_keys(ns) for ns in view.services}
        for vip, role in view.vips if view is not None else []:
            seen.add(vip.address)
            assert view is not None
            out.append(
                self._decide_vip(
                    view,
                    vip,
                    role,
                    services_of.get(vip.address, []),
                    vip_revs.get(vip.address, 0),
                    health,
                    fwd,
                    requests,
                    health_causes,
                    config_cause,
                    next_hops.get(vip.address.version),
                    now,
                    now_wall,
                    announcers,
                    drain,
                )
            )
        for addr in [a for a in self.mem if a not in seen]:
            m = self.mem.pop(addr)
            if m.state != RouteState.WITHDRAWN or m.written is not None:
                out.append(
                    Decision(
                        vip=addr,
                        role="primary",
                        state=RouteState.WITHDRAWN,
                        reason=RouteReason.REMOVED,
                        detail="the VIP is no longer served by this node",
                        attributes=BgpAttributes(),
                        gates={},
                        healthy=0,
                        total=0,
                        below=m.below,
                        penalty=m.penalty,
                        damped_until=None,
                        cause=config_cause,
                    )
                )
        return out

    def _decide_vip(  # noqa: PLR0915 - the gates read best in one place
        self,
        view: NodeView,
        vip: Vip,
        role: Role,
        services: list[NodeService],
        vip_rev: int,
        health: Mapping[str, HealthEntry],
        fwd: ForwarderObs | None,
        requests: Requests,
        health_causes: Mapping[str, Cause],
        config_cause: Cause | None,
        next_hop: IP | None,
        now: float,
        now_wall: datetime,
        announcers: Mapping[IP, Announcers] | None,
        drain: DrainStatus | None = None,
    ) -> Decision:
        m = self.mem.get(vip.address)
        if m is None:
            m = self.mem[vip.address] = VipMemory(penalty_at=now, healthy_since=now)
        self._decay(m, now)
        announced = m.state != RouteState.WITHDRAWN

        # health, with hysteresis
        counts = count_healthy([self._keys[id(ns)] for ns in services], health)
        healthy = sum(h for h, _ in counts)
        total = sum(t for _, t in counts)
        lows = [vip.bgp.thresholds(t) for _, t in counts]
        any_low = any(h < lo for (h, _), (lo, _) in zip(counts, lows, strict=True)) or not counts
        all_high = bool(counts) and all(h >= hi for (h, _), (_, hi) in zip(counts, lows, strict=True))
        was_below = m.below
        m.below = (not all_high) if was_below else any_low
        if was_below and not m.below:
            m.healthy_since = now
        per_service = ", ".join(f"{ns.service.name} {h}/{t}" for ns, (h, t) in zip(services, counts, strict=True))
        wm = f"low {vip.bgp.low_watermark}, high {vip.bgp.high_watermark}"
        health_gate = GateStatus(ok=not m.below, detail=f"{per_service or 'no services'} ({wm})"[:512])
        health_cause = max(
            (c for ns in services if (c := health_causes.get(ns.service.name)) is not None),
            key=lambda c: c.at,
            default=None,
        )

        gates: dict[GateName, GateStatus] = {}
        failing: tuple[RouteReason, str, Cause | None] | None = None

        drained = drain is not None and drain.completed is not None
        gates["node_active"] = GateStatus(ok=not view.isolated and not drained, detail=_node_detail(view, drain))
        if view.isolated:
            failing = (RouteReason.NODE_ISOLATED, f"node {self.node_id} is isolated", config_cause)
        elif drain is not None and drain.completed is not None:
            failing = (
                RouteReason.NODE_DRAINED,
                f"node {self.node_id} drained ({drain.completed.value}) at {_hms(drain.completed_at)}",
                config_cause,
            )
        gates["vip_enabled"] = GateStatus(ok=vip.enabled, detail="enabled" if vip.enabled else "disabled")
        if failing is None and not vip.enabled:
            failing = (RouteReason.VIP_DISABLED, "the VIP is disabled", config_cause)

        nreq = requests.node(self.node_id, vip.address, now_wall)
        creq = requests.cluster(view.node.cluster, vip.address, now_wall)
        guard = ""
        others = announcers.get(vip.address, Announcers(0, 0)) if announcers is not None else None
        if nreq is not None and not nreq.operator and others is not None and others.elsewhere == 0:
            guard = f"node withdraw {nreq.request_id} by {nreq.requester} not honoured: no other node announces the VIP"
            nreq = None
        if creq is not None and not creq.operator and others is not None and others.other_clusters == 0:
            guard = (
                f"cluster withdraw {creq.request_id} by {creq.requester} not honoured: "
                "no node of another cluster announces the VIP"
            )
            creq = None
        if nreq is not None:
            gates["requests"] = GateStatus(ok=False, detail=f"node withdraw {nreq.request_id} by {nreq.requester}")
            if failing is None:
                detail = f"node withdraw request {nreq.request_id} by {nreq.requester}: {nreq.reason}"
                failing = (RouteReason.NODE_WITHDRAW_REQUEST, detail, nreq.cause)
        elif creq is not None:
            gates["requests"] = GateStatus(ok=False, detail=f"cluster withdraw {creq.request_id} by {creq.requester}")
            if failing is None:
                detail = (
                    f"cluster {view.node.cluster} withdraw request {creq.request_id} by {creq.requester}: {creq.reason}"
                )
                failing = (RouteReason.CLUSTER_WITHDRAW_REQUEST, detail, creq.cause)
        else:
            gates["requests"] = GateStatus(ok=True, detail=guard or "none in force")

        fgate, pgate, freason, fcause = self._forwarder_gate(vip, fwd, vip_rev, announced, now)
        gates["forwarder"] = fgate
        gates["programmed"] = pgate
        if failing is None and freason is not None:
            failing = (freason, fgate.detail if not fgate.ok else pgate.detail, fcause)
        gates["health"] = health_gate

        def make(
            state: RouteState,
            reason: RouteReason,
            detail: str,
            cause: Cause | None,
            attrs: BgpAttributes | None = None,
            damped_until: float | None = None,
            health_withdrawal: bool = False,
        ) -> Decision:
            if attrs is None:
                attrs = BgpAttributes() if state == RouteState.WITHDRAWN else m.attributes
            if state != m.state or attrs != m.attributes or m.since is None:
                m.since = now_wall
            m.state, m.reason, m.attributes = state, reason, attrs
            return Decision(
                vip=vip.address,
                role=role,
                state=state,
                reason=reason,
                detail=detail[:1024],
                attributes=attrs,
                gates=gates,
                healthy=healthy,
                total=total,
                below=m.below,
                penalty=round(m.penalty, 3),
                damped_until=damped_until,
                cause=cause,
                health_withdrawal=health_withdrawal,
                drain=drain.mark if drain is not None else None,
            )

        if failing is not None:
            reason, detail, cause = failing
            if m.below:
                m.hold_pending = True
            return make(RouteState.WITHDRAWN, reason, detail, cause)

        if m.below:
            detail = f"below the low watermark: {health_gate.detail}"
            if vip.bgp.on_unhealthy == "deprioritise":
                attrs = combine_attributes(vip, role, True, next_hop)
                if m.state == RouteState.ANNOUNCED:
                    m.penalty += 1.0
                m.hold_pending = True
                return make(RouteState.DEPRIORITISED, RouteReason.BELOW_LOW_WATERMARK, detail, health_cause, attrs)
            if m.state == RouteState.WITHDRAWN:
                m.hold_pending = True
                return make(RouteState.WITHDRAWN, RouteReason.BELOW_LOW_WATERMARK, detail, health_cause)
            if not self._withdrawal_allowed(now):
                limit = self.damping.withdrawals_per_min
                return make(
                    m.state,
                    RouteReason.DAMPED,
                    f"{detail}; kept: the limit of {limit} health-driven withdrawals per minute is reached",
                    health_cause,
                )
            self._withdrawals.append(now)
            m.penalty += 1.0
            m.hold_pending = True
            return make(
                RouteState.WITHDRAWN, RouteReason.BELOW_LOW_WATERMARK, detail, health_cause, health_withdrawal=True
            )

        # every gate holds
        attrs = combine_attributes(vip, role, drain is not None, next_hop)
        if m.hold_pending:
            hold = self.damping.hold(m.penalty)
            until = m.healthy_since + hold
            if now < until:
                detail = (
                    f"healthy again for {now - m.healthy_since:.1f}s; hold-down {hold:.1f}s "
                    f"(flap penalty {m.penalty:.2f}), announce in {until - now:.1f}s"
                )
                return make(m.state, RouteReason.DAMPED, detail, health_cause, damped_until=until)
            m.hold_pending = False
        cause = health_cause if m.reason in HEALTH_REASONS else (fwd.cause if fwd is not None else None)
        if drain is not None:
            detail = f"node draining: deprioritised until idle or {_hms(drain.deadline)}; {health_gate.detail}"
            return make(RouteState.DEPRIORITISED, RouteReason.NODE_DRAINING, detail, config_cause, attrs)
        if m.reason in (
            RouteReason.NODE_ISOLATED,
            RouteReason.VIP_DISABLED,
            RouteReason.NODE_DRAINING,
            RouteReason.NODE_DRAINED,
        ):
            cause = config_cause
        detail = f"all gates hold ({role}); {health_gate.detail}"
        return make(RouteState.ANNOUNCED, RouteReason.GATES_OK, detail, cause, attrs)


def _hms(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t is not None else "?"


def _conns(n: int | None) -> str:
    return "connections unknown" if n is None else f"{n} connection{'s' if n != 1 else ''}"


def _node_detail(view: NodeView, drain: DrainStatus | None) -> str:
    if drain is None:
        return f"node {view.node.state}"
    if drain.completed is not None:
        return f"node drained ({drain.completed.value}) at {_hms(drain.completed_at)}"
    return (
        f"node draining since {_hms(drain.started_at)}: deprioritised until fewer than {drain.threshold} "
        f"connections, withdrawn by {_hms(drain.deadline)} at the latest"
    )
