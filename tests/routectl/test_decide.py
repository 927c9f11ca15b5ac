"""The decision engine on its own: gates, watermarks with hysteresis, damping, the withdrawal limit,
requests, attributes (no NATS, no BGP)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

from services.routectl.decide import Announcers, Cause, DampingPolicy, Decider, Decision, ForwarderObs, Requests
from services.routectl.speaker import PeerSpec, SpeakerConfig, announce_command, exabgp_config, route_command
from tests.routectl.harness import BACKENDS, CHECK, VIP, make_doc
from vgw.config import ConfigDocument, health_key, node_view
from vgw.events import (
    BackendState,
    BgpAttributes,
    CheckKind,
    ClusterWithdrawRequest,
    DataplaneStatus,
    ForwarderState,
    NodeWithdrawRequest,
    ProbeResult,
    RequestAction,
    RouteReason,
    RouteState,
)
from vgw.health import HealthEntry

IP = ipaddress.ip_address(VIP)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def entry(backend: str, up: bool) -> HealthEntry:
    return HealthEntry(
        address=backend,
        port=8080,
        check=CHECK,
        kind=CheckKind.TCP,
        state=BackendState.UP if up else BackendState.DOWN,
        reason=ProbeResult.OK if up else ProbeResult.REFUSED,
        since=NOW,
        checker="t",
    )


def health(*ups: bool) -> dict[str, HealthEntry]:
    return {health_key(b, 8080, CHECK): entry(b, u) for b, u in zip(BACKENDS, ups, strict=False)}


def fwd(
    at: float, *, revision: int = 1, vips: list[str] | None = None, state: str = "up", kept: bool | None = None
) -> ForwarderObs:
    st = DataplaneStatus(
        node="n1",
        seq=1,
        interval_s=1.0,
        forwarder=ForwarderState(state),
        config_revision=revision,
        vips=[VIP] if vips is None else vips,
        conn_state_kept=kept,
    )
    return ForwarderObs(status=st, received_at=at, cause=Cause("hb"))


class Rig:
    def __init__(
        self, doc: ConfigDocument | None = None, node: str = "n1", grace_s: float = 0.0, **damping: Any
    ) -> None:
        self.doc = doc or make_doc(2)
        self.node = node
        self.d = Decider(node, DampingPolicy(**{"hold_down_s": 0.0, **damping}), stale_s=3.0, restart_grace_s=grace_s)
        self.requests = Requests()
        self.health = health(True, True)
        self.fwd: ForwarderObs | None = None
        self.revs = {IP: 1}

    def at(self, t: float, **kw: Any) -> Decision:
        if self.fwd is None or kw.get("beat", True):
            self.fwd = fwd(t, revision=kw.get("revision", 1), vips=kw.get("vips"), state=kw.get("state", "up"),
                           kept=kw.get("kept"))  # fmt: skip
        out = self.d.decide(
            node_view(self.doc, self.node),
            self.revs,
            self.health,
            self.fwd,
            self.requests,
            {},
            None,
            t,
            NOW + timedelta(seconds=t),
        )
        return next(d for d in out if d.vip == IP)


def test_all_gates_hold_announces_with_normal_attributes() -> None:
    r = Rig()
    d = r.at(0.0)
    assert (d.state, d.reason) == (RouteState.ANNOUNCED, RouteReason.GATES_OK)
    assert str(d.attributes.next_hop) == "192.0.2.11"
    assert d.attributes.communities == ["65000:100"] and d.attributes.med is None
    assert all(g.ok for g in d.gates.values())
    assert (d.healthy, d.total) == (2, 2)


def test_forwarder_gates() -> None:
    r = Rig()
    assert r.at(0.0).state == RouteState.ANNOUNCED
    d = r.at(3.5, beat=False)
    assert (d.state, d.reason) == (RouteState.WITHDRAWN, RouteReason.FORWARDER_STALE)
    assert r.at(4.0, state="down").reason == RouteReason.FORWARDER_DOWN
    assert r.at(5.0, vips=[]).reason == RouteReason.NOT_PROGRAMMED
    # The VIP changed at revision 2 and the forwarder is still at 1: not announced (it was withdrawn).
    r.revs = {IP: 2}
    assert r.at(6.0, revision=1).reason == RouteReason.NOT_PROGRAMMED
    assert r.at(7.0, revision=2).state == RouteState.ANNOUNCED
    # Already announced, config moves on: the lagging forwarder still serves the VIP, keep it.
    r.revs = {IP: 3}
    assert r.at(8.0, revision=2).state == RouteState.ANNOUNCED


def test_a_restarting_forwarder_that_keeps_its_connections_stays_announced_for_the_grace() -> None:
    r = Rig(grace_s=2.0)
    assert r.at(0.0, kept=True).state == RouteState.ANNOUNCED
    # down (the shim's socket is gone), then starting (back, not yet re-applied by the shim): kept
    for t, state in ((1.0, "down"), (1.5, "down"), (2.2, "starting")):
        d = r.at(t, state=state, vips=[], kept=True)
        assert (d.state, d.reason) == (RouteState.ANNOUNCED, RouteReason.GATES_OK), (t, d)
        assert "restart grace" in d.gates["forwarder"].detail
    assert r.at(2.5, kept=True).state == RouteState.ANNOUNCED  # up again: the window closes
    # a forwarder that stays down: withdrawn once the grace has passed since the first down status
    assert r.at(3.0, state="down", vips=[], kept=True).state == RouteState.ANNOUNCED
    d = r.at(5.0, state="down", vips=[], kept=True)
    assert (d.state, d.reason) == (RouteState.WITHDRAWN, RouteReason.FORWARDER_DOWN)
    # withdrawn, it is not announced by the grace of a later restart before it is up
    assert r.at(6.0, kept=True).state == RouteState.ANNOUNCED
    assert r.at(6.5, state="down", vips=[], kept=True).state == RouteState.ANNOUNCED


def test_no_restart_grace_without_kept_connections_or_when_off() -> None:
    for rig, kept in ((Rig(grace_s=2.0), False), (Rig(grace_s=2.0), None), (Rig(grace_s=0.0), True)):
        assert rig.at(0.0, kept=kept).state == RouteState.ANNOUNCED
        d = rig.at(0.5, state="down", vips=[], kept=kept)
        assert (d.state, d.reason) == (RouteState.WITHDRAWN, RouteReason.FORWARDER_DOWN), (kept, rig.d.restart_grace_s)
    # stale (no status at all for the bound) is never excused by the grace
    r = Rig(grace_s=10.0)
    assert r.at(0.0, kept=True).state == RouteState.ANNOUNCED
    assert r.at(0.5, state="down", vips=[], kept=True).state == RouteState.ANNOUNCED
    assert r.at(4.0, beat=False).reason == RouteReason.FORWARDER_STALE


def test_no_status_at_all_is_stale() -> None:
    r = Rig()
    out = r.d.decide(node_view(r.doc, "n1"), r.revs, r.health, None, r.requests, {}, None, 0.0, NOW)
    assert out[0].reason == RouteReason.FORWARDER_STALE


def test_watermarks_with_hysteresis() -> None:
    doc = make_doc(1)
    raw = doc.model_dump(mode="json")
    raw["vips"][0]["bgp"]["low_watermark"] = 1
    raw["vips"][0]["bgp"]["high_watermark"] = 2
    r = Rig(ConfigDocument.model_validate(raw))
    assert r.at(0.0).state == RouteState.ANNOUNCED
    r.health = health(True, False)  # 1 healthy: not below low (1)
    assert r.at(1.0).state == RouteState.ANNOUNCED
    r.health = health(False, False)
    d = r.at(2.0)
    assert (d.state, d.reason, d.below) == (RouteState.WITHDRAWN, RouteReason.BELOW_LOW_WATERMARK, True)
    r.health = health(True, False)  # 1 healthy: above low but below high -> still withdrawn
    assert r.at(3.0).state == RouteState.WITHDRAWN
    r.health = health(True, True)
    assert r.at(4.0).state == RouteState.ANNOUNCED


def test_unchecked_counts_healthy_and_disabled_backends_are_excluded() -> None:
    raw = make_doc(1).model_dump(mode="json")
    raw["vips"][0]["services"][0]["backends"][1]["state"] = "disabled"
    r = Rig(ConfigDocument.model_validate(raw))
    r.health = health(True, True)
    d = r.at(0.0)
    assert (d.healthy, d.total) == (1, 1)
    r.health = health(False, True)  # the disabled one is up, but does not count
    assert r.at(1.0).state == RouteState.WITHDRAWN
    raw["vips"][0]["services"][0]["health_check"] = None
    r2 = Rig(ConfigDocument.model_validate(raw))
    r2.health = {}
    assert r2.at(0.0).state == RouteState.ANNOUNCED


def test_missing_health_entry_uses_initial_state() -> None:
    r = Rig()
    r.health = {}
    assert r.at(0.0).reason == RouteReason.BELOW_LOW_WATERMARK  # initial_state unknown: not healthy


def test_deprioritise_keeps_announcing_with_worse_attributes() -> None:
    r = Rig(make_doc(1, on_unhealthy="deprioritise"))
    assert r.at(0.0).state == RouteState.ANNOUNCED
    r.health = health(False, False)
    d = r.at(1.0)
    assert (d.state, d.reason) == (RouteState.DEPRIORITISED, RouteReason.BELOW_LOW_WATERMARK)
    assert d.attributes.med == 1000 and d.attributes.as_path_prepend == 2
    assert d.attributes.communities == ["65000:100", "65000:666"]


def test_standby_node_uses_standby_attributes() -> None:
    raw = make_doc(2).model_dump(mode="json")
    raw["clusters"] = [{"name": "c1", "standby": "c2"}, {"name": "c2"}]
    raw["nodes"][1]["cluster"] = "c2"
    r = Rig(ConfigDocument.model_validate(raw), node="n2")
    d = r.at(0.0)
    assert d.role == "standby" and d.state == RouteState.ANNOUNCED
    assert d.attributes.med == 2000 and d.attributes.as_path_prepend == 4


def test_isolated_and_disabled() -> None:
    r = Rig(make_doc(2, isolated=(1,)))
    assert r.at(0.0).reason == RouteReason.NODE_ISOLATED
    r = Rig(make_doc(2, vip_enabled=False))
    assert r.at(0.0).reason == RouteReason.VIP_DISABLED


def _req(cls: type, action: RequestAction, vip: str | None, expires: datetime | None = None, **kw: Any) -> Any:
    return cls(request_id="r1", action=action, vip=vip, requester="monitor/t", reason="test", expires_at=expires, **kw)


def test_withdraw_requests_with_expiry_and_restore() -> None:
    r = Rig()
    assert r.at(0.0).state == RouteState.ANNOUNCED
    r.requests.apply(
        _req(NodeWithdrawRequest, RequestAction.WITHDRAW, VIP, NOW + timedelta(seconds=10), node="n1"), Cause("q")
    )
    d = r.at(1.0)
    assert (d.reason, d.cause) == (RouteReason.NODE_WITHDRAW_REQUEST, Cause("q"))
    assert r.at(11.0).state == RouteState.ANNOUNCED  # expired
    r.requests.apply(_req(ClusterWithdrawRequest, RequestAction.WITHDRAW, None, cluster="c1"), Cause("c"))
    assert r.at(12.0).reason == RouteReason.CLUSTER_WITHDRAW_REQUEST
    r.requests.apply(_req(ClusterWithdrawRequest, RequestAction.WITHDRAW, None, cluster="other"), Cause("o"))
    r.requests.apply(_req(ClusterWithdrawRequest, RequestAction.RESTORE, None, cluster="c1"), Cause("c2"))
    assert r.at(13.0).state == RouteState.ANNOUNCED


def test_damping_holds_down_and_backs_off() -> None:
    r = Rig(hold_down_s=3.0, hold_down_max_s=100.0, half_life_s=1000.0)
    assert r.at(0.0).state == RouteState.ANNOUNCED
    r.health = health(False, False)
    assert r.at(1.0).state == RouteState.WITHDRAWN  # withdraw at once
    r.health = health(True, True)
    d = r.at(2.0)
    assert (d.state, d.reason) == (RouteState.WITHDRAWN, RouteReason.DAMPED)
    assert r.at(4.9).reason == RouteReason.DAMPED
    assert r.at(5.1).state == RouteState.ANNOUNCED  # healthy for the 3 s hold-down
    # A second flap: the hold-down doubles (penalty ~2 -> 6 s).
    r.health = health(False, False)
    assert r.at(6.0).state == RouteState.WITHDRAWN
    r.health = health(True, True)
    assert r.at(10.0).reason == RouteReason.DAMPED
    assert r.at(15.5).reason == RouteReason.DAMPED
    assert r.at(16.1).state == RouteState.ANNOUNCED
    # Forwarder death is never damped.
    assert r.at(20.0, beat=False).reason == RouteReason.FORWARDER_STALE


def test_flapping_never_reannounces_while_flapping() -> None:
    r = Rig(hold_down_s=3.0)
    states = []
    t = 0.0
    for i in range(20):
        r.health = health(i % 2 == 1, i % 2 == 1)
        states.append(r.at(t).state)
        t += 2.0
    assert states[0] == RouteState.WITHDRAWN or states.count(RouteState.ANNOUNCED) <= 1
    assert all(s == RouteState.WITHDRAWN for s in states[1:])


def test_health_withdrawals_are_limited_per_minute() -> None:
    doc = make_doc(1)
    raw = doc.model_dump(mode="json")
    vip2 = dict(raw["vips"][0], address="203.0.113.11")
    vip2["services"] = [dict(vip2["services"][0], name="web2")]
    raw["vips"].append(vip2)
    r = Rig(ConfigDocument.model_validate(raw), withdrawals_per_min=1)
    both = [VIP, "203.0.113.11"]
    r.at(0.0, vips=both)
    r.health = health(False, False)
    out = r.d.decide(node_view(r.doc, "n1"), {}, r.health, fwd(1.0, vips=both), r.requests, {}, None, 1.0, NOW)
    by_state = sorted((d.state.value, d.reason.value) for d in out)
    assert by_state == [("announced", "damped"), ("withdrawn", "below_low_watermark")]
    # After a minute the second one may go too.
    out = r.d.decide(node_view(r.doc, "n1"), {}, r.health, fwd(62.0, vips=both), r.requests, {}, None, 62.0, NOW)
    assert all(d.state == RouteState.WITHDRAWN for d in out)


def test_removed_vip_is_withdrawn() -> None:
    r = Rig()
    r.at(0.0)
    out = r.d.decide(None, {}, {}, fwd(1.0), r.requests, {}, None, 1.0, NOW)
    assert [(d.state, d.reason) for d in out] == [(RouteState.WITHDRAWN, RouteReason.REMOVED)]


def test_exabgp_commands_and_config() -> None:
    ebgp = PeerSpec("192.0.2.1", 64512, 179, 3, "s3cret", "192.0.2.11", None)
    attrs = BgpAttributes(
        next_hop=ipaddress.ip_address("192.0.2.11"), med=1000, communities=["65000:1"], as_path_prepend=2
    )
    cmd = route_command(ebgp, 64513, IP, attrs)
    assert cmd == (
        "neighbor 192.0.2.1 announce route 203.0.113.10/32 next-hop 192.0.2.11 med 1000 "
        "community [ 65000:1 ] as-path [ 64513 64513 64513 ]"
    )
    assert route_command(ebgp, 64513, IP, None) == "neighbor 192.0.2.1 withdraw route 203.0.113.10/32"
    assert route_command(ebgp, 64513, ipaddress.ip_address("2001:db8::1"), attrs) is None
    two = [IP, ipaddress.ip_address("203.0.113.11"), ipaddress.ip_address("2001:db8::1")]
    assert announce_command(ebgp, 64513, two, attrs) == (
        "neighbor 192.0.2.1 announce attributes next-hop 192.0.2.11 med 1000 community [ 65000:1 ] "
        "as-path [ 64513 64513 64513 ] nlri 203.0.113.10/32 203.0.113.11/32"
    )
    assert announce_command(ebgp, 64513, two[:1], attrs) == cmd
    text = exabgp_config(SpeakerConfig("192.0.2.11", 64513, (ebgp,), 0), "python bridge.py")
    assert 'md5-password "s3cret";' in text and "hold-time 3;" in text and "neighbor-changes;" in text


def test_automatic_requests_never_withdraw_the_last_announcer() -> None:
    r = Rig()
    r.at(0.0)

    def decide(t: float, others: Announcers | None) -> Decision:
        out = r.d.decide(
            node_view(r.doc, "n1"),
            r.revs,
            r.health,
            fwd(t),
            r.requests,
            {},
            None,
            t,
            NOW + timedelta(seconds=t),
            {IP: others} if others is not None else {},
        )
        return out[0]

    r.requests.apply(_req(NodeWithdrawRequest, RequestAction.WITHDRAW, VIP, node="n1"), Cause("m"))
    # The monitor asks, but nobody else announces the VIP: not honoured, and said so.
    d = decide(1.0, None)
    assert d.state == RouteState.ANNOUNCED and "not honoured" in d.gates["requests"].detail
    # Node 2 announces it: honoured.
    assert decide(2.0, Announcers(1, 0)).reason == RouteReason.NODE_WITHDRAW_REQUEST
    # A cluster request from the monitor needs a node of another cluster announcing.
    r.requests = Requests()
    r.requests.apply(_req(ClusterWithdrawRequest, RequestAction.WITHDRAW, None, cluster="c1"), Cause("c"))
    assert decide(3.0, Announcers(1, 0)).state == RouteState.ANNOUNCED
    assert decide(4.0, Announcers(2, 1)).reason == RouteReason.CLUSTER_WITHDRAW_REQUEST
    # Operators are always obeyed.
    r.requests = Requests()
    req = NodeWithdrawRequest(
        request_id="o", action=RequestAction.WITHDRAW, vip=None, requester="operator/alice", reason="x", node="n1"
    )
    r.requests.apply(req, Cause("o"))
    assert decide(5.0, None).reason == RouteReason.NODE_WITHDRAW_REQUEST
