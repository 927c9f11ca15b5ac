"""The decision per VIP on one node: gates, watermark hysteresis, damping and the withdrawal limit.

Pure logic over plain inputs (config view, health entries, the last ``dataplane.status``, withdraw
requests, monotonic time), so it is unit-tested without NATS or BGP. :class:`Decider` keeps the
per-VIP memory (current state, hysteresis, flap penalty) between evaluations.

Gates, in the order their failure is reported as the reason:

1. ``node_active``  -- the node is not isolated                           -> ``node_isolated``
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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from opentelemetry.trace import SpanContext

from vgw.config import NodeService, NodeView, Vip
from vgw.config.model import Role
from vgw.events import (
    BackendState,
    BgpAttributes,
    ClusterWithdrawRequest,
    DataplaneStatus,
    ForwarderState,
    NodeWithdrawRequest,
    RequestAction,
    RouteReason,
    RouteState,
)
from vgw.health import HealthEntry
from vgw.naming import IP
from vgw.routes import GateName, GateStatus, RouteEntry

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

    @property
    def signature(self) -> tuple[object, ...]:
        """What makes a decision different enough to be written again (no timestamps)."""
        gates = tuple(sorted((k, v.ok) for k, v in self.gates.items()))
        return (self.state, self.reason, self.attributes, gates, self.healthy, self.total, self.below, self.role)


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


def count_healthy(services: list[NodeService], health: Mapping[str, HealthEntry]) -> list[tuple[int, int]]:
    """(healthy, usable) backends per service: disabled backends are not usable; unchecked services'
    backends are healthy; a backend without a health entry takes its check's ``initial_state``."""
    out = []
    for ns in services:
        healthy = total = 0
        for b in ns.service.backends:
            if b.state == "disabled":
                continue
            total += 1
            key = ns.backend_health_key(b)
            if key is None or ns.health_check is None:
                healthy += 1
                continue
            e = health.get(key)
            state = e.state.value if e is not None else ns.health_check.initial_state
            if state == BackendState.UP.value:
                healthy += 1
        out.append((healthy, total))
    return out


class Decider:
    """Decisions for every VIP of one node, with memory between evaluations."""

    def __init__(self, node_id: str, damping: DampingPolicy, stale_s: float) -> None:
        self.node_id = node_id
        self.damping = damping
        self.stale_s = stale_s
        self.mem: dict[IP, VipMemory] = {}
        self._withdrawals: deque[float] = deque()

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
        out: list[Decision] = []
        seen: set[IP] = set()
        next_hop: IP | None = None
        if view is not None:
            bgp = view.node.bgp
            next_hop = bgp.next_hop if bgp is not None and bgp.next_hop is not None else view.node.external.address.ip
        services_of: dict[IP, list[NodeService]] = {}
        if view is not None:
            for ns in view.services:
                services_of.setdefault(ns.vip.address, []).append(ns)
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
                    next_hop,
                    now,
                    now_wall,
                    announcers,
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
    ) -> Decision:
        m = self.mem.get(vip.address)
        if m is None:
            m = self.mem[vip.address] = VipMemory(penalty_at=now, healthy_since=now)
        self._decay(m, now)
        announced = m.state != RouteState.WITHDRAWN

        # health, with hysteresis
        counts = count_healthy(services, health)
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

        gates["node_active"] = GateStatus(ok=not view.isolated, detail=f"node {view.node.state}")
        if view.isolated:
            failing = (RouteReason.NODE_ISOLATED, f"node {self.node_id} is isolated", config_cause)
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
        attrs = combine_attributes(vip, role, False, next_hop)
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
        if m.reason in (RouteReason.NODE_ISOLATED, RouteReason.VIP_DISABLED):
            cause = config_cause
        detail = f"all gates hold ({role}); {health_gate.detail}"
        return make(RouteState.ANNOUNCED, RouteReason.GATES_OK, detail, cause, attrs)
