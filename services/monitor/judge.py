"""Judging a VIP from every vantage point's observations: its status, and the withdraw requests
that are safe to make. Pure logic with its own memory (hold-downs, rate limit), fed a clock, so it
is tested without a network.

Guard rails, in the order they apply:
* A path is *failing* at a vantage point after ``fail_after`` consecutive failures.
* A vantage point blames a node only if, at the same time, it reaches the VIP through another
  node: a vantage point that lost its own connectivity fails everywhere and blames no one.
* A node is withdrawn only when a quorum of the vantage points that probe it blame it.
* Never the last working announcement: a node is withdrawn only if another node of the VIP stays
  announced and working.
* At most ``max_withdrawals_per_min`` new withdrawals a minute (restores are never limited).
* Every request expires by itself (``request_ttl_s``) unless refreshed while its cause persists;
  a withdrawn node is restored once its path has worked from every vantage point for ``hold_down_s``.
* A cluster is withdrawn only when the VIP fails from every vantage point through every primary
  node and the routed path, and a standby cluster is configured with a node that works.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from vgw.events import ClusterWithdrawRequest, NodeWithdrawRequest, ProbeEvidence, RequestAction, VipHealth
from vgw.events.base import IPAddress
from vgw.monitoring import ROUTED, ActiveRequest, NodeVerdict, PathObservation, VipView, request_key

Request = NodeWithdrawRequest | ClusterWithdrawRequest


@dataclass(frozen=True)
class JudgeParams:
    fail_after: int = 3
    quorum: float = 0.5
    hold_down_s: float = 10.0
    request_ttl_s: float = 30.0
    max_withdrawals_per_min: int = 3
    stale_after_intervals: float = 3.0


@dataclass(frozen=True)
class VipTopology:
    vip: IPAddress
    port: int
    protocol: Literal["tcp", "udp"]
    probe: str
    cluster: str
    primary: tuple[str, ...]
    standby: tuple[str, ...] = ()
    standby_cluster: str | None = None


@dataclass
class Judgement:
    view: VipView
    changed: bool
    """The status differs from the previous judgement (publish a monitor.vip.status)."""
    previous: VipHealth | None
    publish: list[Request] = field(default_factory=list)
    store: dict[str, ActiveRequest | None] = field(default_factory=dict)
    """Request keys to write (or delete, when None)."""


def verdict_of(o: PathObservation | None, fail_after: int) -> NodeVerdict:
    if o is None:
        return "unknown"
    if o.consecutive_failures >= fail_after:
        return "failing"
    if o.consecutive_successes >= 1:
        return "ok"
    return "unknown"


class _Scene:
    """Every vantage point's verdict on every path of one VIP probe, and what follows from them."""

    def __init__(
        self, topo: VipTopology, obs: list[PathObservation], p: JudgeParams, ignore: frozenset[str] = frozenset()
    ) -> None:
        self.topo = topo
        self.ignore = ignore
        self.obs = obs
        self.vantages = sorted({o.vantage for o in obs})
        self.by: dict[str, dict[str, PathObservation]] = {}
        for o in obs:
            self.by.setdefault(o.path, {})[o.vantage] = o
        self.nodes = [*topo.primary, *topo.standby]
        self.verdict = {
            (path, v): verdict_of(self.by.get(path, {}).get(v), p.fail_after)
            for path in [ROUTED, *self.nodes]
            for v in self.vantages
        }
        self.blame = {n: self._blamers(n) for n in self.nodes}
        self.failing = {n for n in self.nodes if self._quorum_blames(n, p.quorum)}

    def _quorum_blames(self, node: str, quorum: float) -> bool:
        probing = self.probing(node)
        return bool(probing) and len(self.blame[node]) >= max(1, math.ceil(quorum * len(probing)))

    def probing(self, path: str) -> list[str]:
        return sorted(self.by.get(path, {}))

    def _blamers(self, node: str) -> list[str]:
        # A vantage point blames a node only while it reaches the VIP through another node — and
        # reached it *after* this node had started failing (by one probe interval at least). Paths
        # are probed one by one, so when everything breaks at once one path reaches its failure count
        # while another still shows its last, older success: that is no evidence the other works.
        return [
            v
            for v in self.probing(node)
            if v not in self.ignore and self.verdict[(node, v)] == "failing" and self._other_works(node, v)
        ]

    def _other_works(self, node: str, v: str) -> bool:
        """Whether, from vantage point v, another node worked while this one kept failing: a probe
        through it that was *sent after* this node's first failure was seen succeeded, and this node
        failed again after that other node's current run of successes began. A success sent earlier
        (the paths are probed one by one) says nothing about a break that came in between; a node
        that merely recovers first (a link coming back) is no evidence against one that has not been
        probed since. Both times come from the same vantage point's clock."""
        failing = self.by[node][v]
        since, last_fail = failing.failing_since, failing.updated_at
        for m in self.nodes:
            if m == node or self.verdict.get((m, v)) != "ok":
                continue
            other = self.by[m][v]
            if since is None or other.last_ok_at is None or other.succeeding_since is None:
                return True  # observations without timing (older monitors): judge by verdicts alone
            if other.last_ok_at > since and last_fail >= other.succeeding_since:
                return True
        return False

    def works_from_majority(self, path: str) -> bool:
        vs = self.probing(path)
        return bool(vs) and sum(self.verdict[(path, v)] == "ok" for v in vs) * 2 > len(vs)

    def works_everywhere(self, path: str) -> bool:
        vs = self.probing(path)
        return bool(vs) and all(self.verdict[(path, v)] == "ok" for v in vs)

    def fails_everywhere(self, path: str) -> bool:
        vs = self.probing(path)
        return bool(vs) and all(self.verdict[(path, v)] == "failing" for v in vs)

    @property
    def evidence(self) -> list[ProbeEvidence]:
        return [o.evidence() for o in self.obs][:256]


class Judge:
    def __init__(self, leader: str, params: JudgeParams | None = None) -> None:
        self.leader = leader
        self.p = params or JudgeParams()
        self.active: dict[str, ActiveRequest] = {}
        self._ok_since: dict[str, datetime] = {}
        self._status: dict[tuple[str, int], VipHealth] = {}
        self._withdrawals: dict[str, datetime] = {}
        """This judge's own new withdrawals of the last minute, by request id."""
        self.recorded_withdrawals: set[str] | None = set()
        """Request ids of every new withdrawal of the last minute as the store has them (whoever
        led then), so the rate limit continues across a change of leader; None while unknown
        (then nothing new is withdrawn)."""
        self._blind_until: dict[str, datetime] = {}

    def load(self, active: dict[str, ActiveRequest], now: datetime | None = None) -> None:
        """Requests in force from the store (after a restart or a change of leader). With ``now``,
        each is due for a refresh at once: its times come from the clock of whoever wrote it, which
        this judge's clock must not be compared with."""
        if now is not None:
            due = now - timedelta(seconds=self.p.request_ttl_s)
            active = {k: a.model_copy(update={"refreshed_at": due}) for k, a in active.items()}
        self.active = dict(active)

    def _fresh(self, obs: list[PathObservation], now: datetime) -> list[PathObservation]:
        limit = self.p.stale_after_intervals
        return [o for o in obs if (now - o.updated_at).total_seconds() <= limit * o.interval_s + 1.0]

    def _may_withdraw(self, now: datetime) -> bool:
        self._withdrawals = {r: t for r, t in self._withdrawals.items() if now - t < timedelta(minutes=1)}
        if self.recorded_withdrawals is None:
            return False
        return len(self._withdrawals.keys() | self.recorded_withdrawals) < self.p.max_withdrawals_per_min

    @property
    def new_withdrawals(self) -> dict[str, datetime]:
        """This judge's own new withdrawals of the last minute (request id -> when)."""
        return dict(self._withdrawals)

    def _track_ok(self, key: str, ok: bool, now: datetime) -> None:
        if ok:
            self._ok_since.setdefault(key, now)
        else:
            self._ok_since.pop(key, None)

    def _settling(self, obs: list[PathObservation], now: datetime) -> frozenset[str]:
        """Vantage points that were blind — every path failing together — until a moment ago.
        Right after a vantage point's own outage its paths recover one by one (routes, neighbours),
        and the last to recover would look like a blackholing node; its blame waits a while.

        Blind means every path has failed at least ``fail_after - 1`` times in a row, not merely
        its last probe: while a node blackholes the VIP (its path and the routed path hashed to it
        failing), one lost probe on the path that works is a coincidence, not blindness, and
        counting it as blindness held the blame back for another settle period each time — on a
        loaded machine, for good. An outage long enough for some path to count ``fail_after``
        failures (the least a blame needs) gives every path ``fail_after - 1`` at the same time,
        since the paths of a probe are probed at the same interval."""
        blind_after = max(1, self.p.fail_after - 1)
        by_vantage: dict[str, list[PathObservation]] = {}
        for o in obs:
            by_vantage.setdefault(o.vantage, []).append(o)
        for v, paths in by_vantage.items():
            if paths and all(o.consecutive_failures >= blind_after for o in paths):
                settle = 2 * self.p.fail_after * max(o.interval_s for o in paths)
                self._blind_until[v] = now + timedelta(seconds=settle)
        return frozenset(v for v, until in self._blind_until.items() if now < until)

    def judge(self, topo: VipTopology, observations: list[PathObservation], now: datetime) -> Judgement:
        fresh = self._fresh(observations, now)
        scene = _Scene(topo, fresh, self.p, self._settling(fresh, now))
        publish: list[Request] = []
        store: dict[str, ActiveRequest | None] = {}
        self._node_requests(scene, now, publish, store)
        self._cluster_request(scene, now, publish, store)
        view = self._view(scene, now)
        skey = (str(topo.vip), topo.port)
        previous = self._status.get(skey)
        changed = bool(scene.vantages) and previous is not view.status
        if scene.vantages:
            self._status[skey] = view.status
        return Judgement(view=view, changed=changed, previous=previous, publish=publish, store=store)

    def _withdrawn_nodes(self, vip: IPAddress) -> set[str]:
        return {a.target for a in self.active.values() if a.kind == "node" and a.vip == vip}

    def _node_requests(
        self, s: _Scene, now: datetime, publish: list[Request], store: dict[str, ActiveRequest | None]
    ) -> None:
        topo = s.topo
        withdrawn = self._withdrawn_nodes(topo.vip)
        for n in s.nodes:
            key = request_key("node", n, topo.vip)
            self._track_ok(key, s.works_everywhere(n), now)
            if n in s.failing and n not in withdrawn:
                others = [m for m in topo.primary if m != n and m not in withdrawn and s.works_from_majority(m)]
                if not others or not self._may_withdraw(now):
                    continue  # never the last working announcement; rate limit
                reason = (
                    f"probes of {topo.probe} through node {n} fail from {len(s.blame[n])}/{len(s.probing(n))} "
                    f"vantage point(s) ({', '.join(s.blame[n])}) while the VIP works through {', '.join(others)}"
                )
                req = self._request("node", n, topo, reason, now)
                store[key] = req
                publish.append(self._event(req, RequestAction.WITHDRAW, s.evidence))
                self._withdrawals[req.request_id] = now
                withdrawn.add(n)
            elif key in self.active:
                self._keep_or_restore(key, s, now, publish, store)

    def _cluster_request(
        self, s: _Scene, now: datetime, publish: list[Request], store: dict[str, ActiveRequest | None]
    ) -> None:
        topo = s.topo
        key = request_key("cluster", topo.cluster, topo.vip)
        self._track_ok(key, any(s.works_everywhere(n) for n in topo.primary), now)
        if key in self.active:
            self._keep_or_restore(key, s, now, publish, store)
            return
        standby_ok = topo.standby_cluster is not None and any(s.works_from_majority(n) for n in topo.standby)
        if self._cluster_dead(s) and standby_ok and self._may_withdraw(now):
            reason = (
                f"{topo.probe} fails from every vantage point ({', '.join(s.vantages)}) through every node of "
                f"cluster {topo.cluster}; standby cluster {topo.standby_cluster} works"
            )
            req = self._request("cluster", topo.cluster, topo, reason, now)
            store[key] = req
            publish.append(self._event(req, RequestAction.WITHDRAW, s.evidence))
            self._withdrawals[req.request_id] = now

    @staticmethod
    def _cluster_dead(s: _Scene) -> bool:
        primary = s.topo.primary
        return s.fails_everywhere(ROUTED) and bool(primary) and all(s.fails_everywhere(n) for n in primary)

    def _view(self, s: _Scene, now: datetime) -> VipView:
        topo = s.topo
        withdrawn = self._withdrawn_nodes(topo.vip)
        requests = [f"{a.kind} {a.target}: {a.reason}" for a in self.active.values() if a.vip == topo.vip]
        nodes: dict[str, NodeVerdict] = {}
        for n in s.nodes:
            if n in withdrawn:
                nodes[n] = "withdrawn"
            elif n in s.failing:
                nodes[n] = "failing"
            else:
                nodes[n] = "ok" if s.works_from_majority(n) else "unknown"
        routed = [s.verdict[(ROUTED, v)] for v in s.probing(ROUTED)]
        cluster_withdrawn = request_key("cluster", topo.cluster, topo.vip) in self.active
        some_node_works = any(s.works_from_majority(n) for n in s.nodes)
        if s.fails_everywhere(ROUTED) and not some_node_works:
            # Down means nobody can be served: the routed path and every node fail everywhere.
            status = VipHealth.DOWN
            detail = (
                f"{topo.probe} fails from every vantage point ({', '.join(s.vantages)}) through the routed path "
                "and through every node"
            )
            standby_ok = topo.standby_cluster is not None and any(s.works_from_majority(n) for n in topo.standby)
            if not cluster_withdrawn and not standby_ok:
                detail += "; no healthy standby cluster, so every announcement stays"
        elif "failing" in routed or s.failing or requests:
            status = VipHealth.DEGRADED
            parts = []
            if "failing" in routed:
                parts.append(f"routed path fails from {routed.count('failing')}/{len(routed)} vantage points")
            if s.failing:
                parts.append(f"failing through node(s) {', '.join(sorted(s.failing))}")
            if requests:
                parts.append(f"{len(requests)} withdraw request(s) in force")
            detail = "; ".join(parts)
        else:
            status = VipHealth.OK
            detail = f"works from {len(s.vantages)} vantage point(s) through the routed path and every probed node"
        return VipView(
            vip=topo.vip,
            port=topo.port,
            protocol=topo.protocol,
            probe=topo.probe,
            status=status,
            detail=detail[:1024],
            routed="failing" if s.fails_everywhere(ROUTED) else ("ok" if "ok" in routed else "unknown"),
            nodes=nodes,
            vantages=s.vantages,
            evidence=s.evidence,
            requests=requests,
            leader=self.leader,
            updated_at=now,
        )

    def _request(
        self, kind: Literal["node", "cluster"], target: str, topo: VipTopology, reason: str, now: datetime
    ) -> ActiveRequest:
        req = ActiveRequest(
            kind=kind,
            target=target,
            vip=topo.vip,
            request_id=str(uuid.uuid4()),
            standby_cluster=topo.standby_cluster if kind == "cluster" else None,
            reason=reason[:1024],
            issued_at=now,
            expires_at=now + timedelta(seconds=self.p.request_ttl_s),
            refreshed_at=now,
        )
        self.active[request_key(kind, target, topo.vip)] = req
        return req

    def _keep_or_restore(
        self, key: str, s: _Scene, now: datetime, publish: list[Request], store: dict[str, ActiveRequest | None]
    ) -> None:
        """Restore after the hold-down; otherwise refresh before the request expires."""
        req = self.active[key]
        ok_since = self._ok_since.get(key)
        if ok_since is not None and (now - ok_since).total_seconds() >= self.p.hold_down_s:
            del self.active[key]
            store[key] = None
            publish.append(self._event(req, RequestAction.RESTORE, s.evidence))
            return
        # Refreshed only while there is evidence: the cause persists, or the hold-down runs. With no
        # observations at all (the monitor lost its view), the request lapses by itself.
        still_bad = req.target in s.failing if req.kind == "node" else self._cluster_dead(s)
        if not still_bad and ok_since is None:
            return
        if (now - req.refreshed_at).total_seconds() >= self.p.request_ttl_s / 3:
            req = req.model_copy(
                update={"refreshed_at": now, "expires_at": now + timedelta(seconds=self.p.request_ttl_s)}
            )
            self.active[key] = req
            store[key] = req
            publish.append(self._event(req, RequestAction.WITHDRAW, s.evidence))

    def _event(self, req: ActiveRequest, action: RequestAction, evidence: list[ProbeEvidence]) -> Request:
        reason = (
            req.reason
            if action is RequestAction.WITHDRAW
            else f"restored after {self.p.hold_down_s:g}s of working probes ({req.reason})"
        )
        expires = req.expires_at if action is RequestAction.WITHDRAW else None
        requester = f"monitor/{self.leader}"
        if req.kind == "node":
            return NodeWithdrawRequest(
                node=req.target, request_id=req.request_id, action=action, vip=req.vip, requester=requester,
                reason=reason[:1024], evidence=evidence, expires_at=expires,
            )  # fmt: skip
        return ClusterWithdrawRequest(
            cluster=req.target, standby_cluster=req.standby_cluster, request_id=req.request_id, action=action,
            vip=req.vip, requester=requester, reason=reason[:1024], evidence=evidence, expires_at=expires,
        )  # fmt: skip
