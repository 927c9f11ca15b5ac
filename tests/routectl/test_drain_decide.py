"""The drain in the decision engine alone (no NATS, no BGP): deprioritised while connections are at or
above the threshold and the timeout has not passed, withdrawn after (latched per drain), restore,
cancellation, edges for the events, and the state a restarted routectl reads back."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

from services.routectl.decide import Cause, DampingPolicy, Decider, Decision, ForwarderObs, Requests
from tests.routectl.harness import VIP, make_doc
from tests.routectl.test_decide import health
from vgw.config import ConfigDocument, node_view
from vgw.events import DataplaneStatus, DrainEndReason, ForwarderState, RouteReason, RouteState
from vgw.routes import RouteEntry

IP = ipaddress.ip_address(VIP)
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def draining(
    doc: ConfigDocument, *, timeout: float = 60.0, threshold: int = 10, start: datetime = T0
) -> ConfigDocument:
    nodes = list(doc.nodes)
    drain = {"started_at": start, "timeout": timeout, "threshold": threshold}
    nodes[0] = nodes[0].model_validate({**nodes[0].model_dump(), "state": "draining", "drain": drain})
    return doc.model_copy(update={"nodes": nodes})


def status(conns: int | None, half_open: int | None = 0, state: str = "up") -> DataplaneStatus:
    return DataplaneStatus(
        node="n1",
        seq=1,
        interval_s=1.0,
        forwarder=ForwarderState(state),
        config_revision=1,
        vips=[VIP],
        active_connections=conns,
        half_open_connections=half_open,
    )


class DrainRig:
    def __init__(self, doc: ConfigDocument) -> None:
        self.doc = doc
        self.d = Decider("n1", DampingPolicy(hold_down_s=0.0), stale_s=3.0)
        self.conns: int | None = 100
        self.half_open: int | None = 0

    def at(self, t: float, **kw: Any) -> Decision:
        """Decide ``t`` seconds after T0 with a fresh heartbeat carrying ``self.conns``."""
        obs = ForwarderObs(status(self.conns, self.half_open, kw.get("state", "up")), t, Cause(f"hb{t}"))
        out = self.d.decide(
            node_view(self.doc, "n1"),
            {IP: 1},
            health(True, True),
            obs,
            Requests(),
            {},
            Cause("cfg"),
            t,
            T0 + timedelta(seconds=t),
        )
        return next(d for d in out if d.vip == IP)


def test_deprioritised_until_idle_then_withdrawn_and_latched() -> None:
    r = DrainRig(draining(make_doc(2), threshold=10))
    d = r.at(1)
    assert (d.state, d.reason) == (RouteState.DEPRIORITISED, RouteReason.NODE_DRAINING)
    # The deprioritised attributes (make_doc: MED 1000, 2 prepends, community 65000:666).
    assert d.attributes.med == 1000 and d.attributes.as_path_prepend == 2
    assert "65000:666" in d.attributes.communities and "65000:100" in d.attributes.communities
    assert d.gates["node_active"].ok and "draining since 2026-12-01T12:00:00Z" in d.gates["node_active"].detail
    assert d.drain is not None and d.drain.completed is None and d.drain.started_at == T0
    assert [(e.reason, e.status.connections) for e in r.d.drain_events] == [(None, 100)]
    assert r.d.drain_events[0].cause == Cause("cfg")

    r.conns = 10  # at the threshold: still draining
    assert r.at(2).state == RouteState.DEPRIORITISED and r.d.drain_events == []
    r.conns, r.half_open = 14, 5  # half-open entries do not count: 9 < 10
    d = r.at(3)
    assert (d.state, d.reason) == (RouteState.WITHDRAWN, RouteReason.NODE_DRAINED)
    assert "drained (idle)" in d.detail and not d.gates["node_active"].ok
    assert d.drain is not None and d.drain.completed == DrainEndReason.IDLE
    [edge] = r.d.drain_events
    assert edge.reason == DrainEndReason.IDLE and edge.status.connections == 9 and edge.cause == Cause("hb3")
    assert "idle: 9 connections, below the threshold of 10" in edge.detail
    # Latched: connections coming back do not re-announce the VIP; no further edges.
    r.conns, r.half_open = 500, 0
    assert r.at(4).reason == RouteReason.NODE_DRAINED and r.d.drain_events == []


def test_timeout_withdraws_with_connections_left() -> None:
    r = DrainRig(draining(make_doc(2), timeout=30, threshold=1))
    assert r.at(29.9).state == RouteState.DEPRIORITISED
    d = r.at(30)
    assert (d.state, d.reason) == (RouteState.WITHDRAWN, RouteReason.NODE_DRAINED)
    [edge] = [e for e in r.d.drain_events if e.reason is not None]
    assert edge.reason == DrainEndReason.TIMEOUT and "timeout after 30s with 100 connections" in edge.detail


def test_unknown_connections_wait_for_the_timeout() -> None:
    """A shim that does not report connections (or a stale status): only the timeout ends it."""
    r = DrainRig(draining(make_doc(2), timeout=20, threshold=5))
    r.conns = None
    assert r.at(1).reason == RouteReason.NODE_DRAINING
    assert r.at(19).reason == RouteReason.NODE_DRAINING
    assert r.at(20).reason == RouteReason.NODE_DRAINED


def test_forwarder_down_withdraws_but_does_not_complete_the_drain() -> None:
    r = DrainRig(draining(make_doc(2), threshold=5))
    r.conns = 0
    d = r.at(1, state="down")
    assert (d.state, d.reason) == (RouteState.WITHDRAWN, RouteReason.FORWARDER_DOWN)
    assert d.drain is not None and d.drain.completed is None
    assert r.at(2).reason == RouteReason.NODE_DRAINED  # up again with 0 connections: idle


def test_restore_cancels_or_ends_the_drain_and_announces_normally() -> None:
    doc = make_doc(2)
    r = DrainRig(draining(doc))
    assert r.at(1).reason == RouteReason.NODE_DRAINING
    r.doc = doc  # restored before it completed: cancelled
    d = r.at(2)
    assert (d.state, d.reason) == (RouteState.ANNOUNCED, RouteReason.GATES_OK)
    assert d.attributes.med is None and d.drain is None and d.cause == Cause("cfg")
    [edge] = r.d.drain_events
    assert edge.reason == DrainEndReason.CANCELLED and "active again" in edge.detail

    # A completed drain restored: no cancellation edge. A new drain (new start) starts over.
    r.doc = draining(doc, start=T0 + timedelta(seconds=3))
    r.conns = 0
    assert r.at(4).reason == RouteReason.NODE_DRAINED
    r.doc = doc
    assert r.at(5).reason == RouteReason.GATES_OK and r.d.drain_events == []
    r.doc = draining(doc, start=T0 + timedelta(seconds=6))
    r.conns = 50
    assert r.at(7).reason == RouteReason.NODE_DRAINING
    assert [e.reason for e in r.d.drain_events] == [None]


def test_isolation_wins_over_a_drain_and_health_still_applies() -> None:
    doc = draining(make_doc(2))
    r = DrainRig(doc)
    assert r.at(1).reason == RouteReason.NODE_DRAINING
    # Every backend down (policy withdraw): the health gate withdraws the draining VIP.
    r.d = Decider("n1", DampingPolicy(hold_down_s=0.0), stale_s=3.0)
    out = r.d.decide(
        node_view(doc, "n1"),
        {IP: 1},
        health(False, False),
        ForwarderObs(status(100), 2, Cause("hb")),
        Requests(),
        {},
        None,
        2,
        T0 + timedelta(seconds=2),
    )
    assert out[0].reason == RouteReason.BELOW_LOW_WATERMARK and out[0].state == RouteState.WITHDRAWN


def entry_of(d: Decision) -> RouteEntry:
    return RouteEntry(
        node="n1",
        vip=d.vip,
        state=d.state,
        reason=d.reason,
        since=T0,
        decided_at=T0,
        drain=d.drain,
    )


def test_a_restarted_decider_keeps_the_drain_and_its_completion() -> None:
    doc = draining(make_doc(2), threshold=10)
    r = DrainRig(doc)
    started = r.at(1)
    # Restart mid-drain: no second "started" edge, still deprioritised.
    r2 = DrainRig(doc)
    r2.d.restore(entry_of(started), 0.0)
    assert r2.at(2).reason == RouteReason.NODE_DRAINING and r2.d.drain_events == []
    # Completed, then restart with connections back above the threshold: stays withdrawn, no edges.
    r2.conns = 0
    done = r2.at(3)
    assert done.reason == RouteReason.NODE_DRAINED
    r3 = DrainRig(doc)
    r3.d.restore(entry_of(done), 0.0)
    r3.conns = 400
    d = r3.at(4)
    assert d.reason == RouteReason.NODE_DRAINED and r3.d.drain_events == []
    assert d.drain is not None and d.drain.completed == DrainEndReason.IDLE
    # Restored while routectl was down: the restarted one announces normally (the drain had ended).
    r4 = DrainRig(make_doc(2))
    r4.d.restore(entry_of(started), 0.0)
    assert r4.at(5).reason == RouteReason.GATES_OK
    assert [e.reason for e in r4.d.drain_events] == [DrainEndReason.CANCELLED]


def test_a_new_drain_replacing_an_unfinished_one_cancels_it() -> None:
    """Restored and drained again between two evaluations: the old drain is reported cancelled."""
    doc = make_doc(2)
    r = DrainRig(draining(doc))
    assert r.at(1).reason == RouteReason.NODE_DRAINING
    r.doc = draining(doc, start=T0 + timedelta(seconds=2))
    assert r.at(3).reason == RouteReason.NODE_DRAINING
    assert [(e.reason, e.status.started_at) for e in r.d.drain_events] == [
        (DrainEndReason.CANCELLED, T0),
        (None, T0 + timedelta(seconds=2)),
    ]
