"""The monitor's judgement and guard rails, with a clock the test drives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import ip_address

from services.monitor.judge import Judge, JudgeParams, VipTopology
from vgw.events import ClusterWithdrawRequest, NodeWithdrawRequest, ProbeResult, RequestAction, VipHealth
from vgw.monitoring import ROUTED, PathObservation

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
VIP = "203.0.113.10"
TOPO = VipTopology(vip=ip_address(VIP), port=80, protocol="tcp", probe="http-80", cluster="lab", primary=("n1", "n2"))


def obs(vantage: str, path: str, ok: bool, now: datetime = T0, vip: str = VIP) -> PathObservation:
    return PathObservation(
        vantage=vantage, vip=ip_address(vip), port=80, protocol="tcp", probe="http-80", path=path, interval_s=1.0,
        window=5, successes=5 if ok else 0, consecutive_failures=0 if ok else 5,
        consecutive_successes=5 if ok else 0, errors={} if ok else {"timeout": 5},
        last_result=ProbeResult.OK if ok else ProbeResult.TIMEOUT, updated_at=now,
        failing_since=None if ok else now - timedelta(seconds=5), last_ok_at=now if ok else now - timedelta(seconds=6),
        succeeding_since=now - timedelta(seconds=20) if ok else None,
    )  # fmt: skip


def scene(now: datetime, **paths: dict[str, bool]) -> list[PathObservation]:
    """paths: vantage -> {path: ok}"""
    return [obs(v, p, ok, now) for v, ps in paths.items() for p, ok in ps.items()]


OK_ALL = {ROUTED: True, "n1": True, "n2": True}
N1_DOWN = {ROUTED: True, "n1": False, "n2": True}
ALL_DOWN = {ROUTED: False, "n1": False, "n2": False}


def test_blackholing_node_is_withdrawn_then_restored_after_hold_down() -> None:
    j = Judge("vp1", JudgeParams(hold_down_s=10, request_ttl_s=30))
    assert j.judge(TOPO, scene(T0, vp1=OK_ALL), T0).view.status is VipHealth.OK
    r = j.judge(TOPO, scene(T0, vp1=N1_DOWN), T0)
    [req] = r.publish
    assert isinstance(req, NodeWithdrawRequest) and req.node == "n1" and req.action is RequestAction.WITHDRAW
    assert req.expires_at == T0 + timedelta(seconds=30) and "n1" in req.reason and "n2" in req.reason
    assert req.requester == "monitor/vp1" and req.evidence
    assert r.view.status is VipHealth.DEGRADED and r.view.nodes == {"n1": "withdrawn", "n2": "ok"}
    assert r.changed and r.previous is VipHealth.OK
    # still failing: refreshed before it expires, same request id
    t = T0 + timedelta(seconds=11)
    [refresh] = j.judge(TOPO, scene(t, vp1=N1_DOWN), t).publish
    assert refresh.request_id == req.request_id and refresh.expires_at == t + timedelta(seconds=30)
    # fixed: nothing until the hold-down has passed, then a restore
    t1 = T0 + timedelta(seconds=12)
    assert j.judge(TOPO, scene(t1, vp1=OK_ALL), t1).publish == []
    t2 = t1 + timedelta(seconds=9)
    during = j.judge(TOPO, scene(t2, vp1=OK_ALL), t2).publish  # the hold-down keeps it in force (refreshed)
    assert all(p.action is RequestAction.WITHDRAW and p.request_id == req.request_id for p in during)
    t3 = t1 + timedelta(seconds=10)
    [restore] = j.judge(TOPO, scene(t3, vp1=OK_ALL), t3).publish
    assert restore.action is RequestAction.RESTORE and restore.request_id == req.request_id
    assert j.active == {}


def test_a_vantage_point_losing_its_own_connectivity_blames_no_one() -> None:
    j = Judge("vp1")
    r = j.judge(TOPO, scene(T0, vp1=ALL_DOWN, vp2=OK_ALL), T0)
    assert r.publish == [] and r.view.status is VipHealth.DEGRADED
    j2 = Judge("vp1")
    r2 = j2.judge(TOPO, scene(T0, vp1=ALL_DOWN), T0)
    assert r2.publish == []


def test_everything_failing_without_standby_keeps_the_announcements_and_says_down() -> None:
    j = Judge("vp1")
    r = j.judge(TOPO, scene(T0, vp1=ALL_DOWN, vp2=ALL_DOWN), T0)
    assert r.publish == []
    assert r.view.status is VipHealth.DOWN and "no healthy standby" in r.view.detail and r.changed


def test_everything_failing_with_a_working_standby_withdraws_the_cluster() -> None:
    topo = VipTopology(vip=ip_address(VIP), port=80, protocol="tcp", probe="http-80", cluster="lab",
                       primary=("n1", "n2"), standby=("s1",), standby_cluster="dr")  # fmt: skip
    j = Judge("vp1")
    r = j.judge(topo, scene(T0, vp1={**ALL_DOWN, "s1": True}, vp2={**ALL_DOWN, "s1": True}), T0)
    [req] = r.publish
    assert isinstance(req, ClusterWithdrawRequest)
    assert (req.cluster, req.standby_cluster, req.action) == ("lab", "dr", RequestAction.WITHDRAW)
    # standby broken too: no cluster request
    j2 = Judge("vp1")
    assert j2.judge(topo, scene(T0, vp1={**ALL_DOWN, "s1": False}), T0).publish == []


def test_never_the_last_working_announcement() -> None:
    j = Judge("vp1")
    [first] = j.judge(TOPO, scene(T0, vp1=N1_DOWN), T0).publish
    assert first.node == "n1"  # type: ignore[union-attr]
    # now n2 fails too (and n1 is withdrawn): n2 is the last announcement, it stays
    t = T0 + timedelta(seconds=1)
    r = j.judge(TOPO, scene(t, vp1={ROUTED: True, "n1": True, "n2": False}), t)
    assert [p for p in r.publish if p.action is RequestAction.WITHDRAW and getattr(p, "node", "") == "n2"] == []


def test_quorum_of_vantage_points() -> None:
    j = Judge("vp1", JudgeParams(quorum=0.5))
    assert j.judge(TOPO, scene(T0, vp1=N1_DOWN, vp2=OK_ALL, vp3=OK_ALL), T0).publish == []
    [req] = j.judge(TOPO, scene(T0, vp1=N1_DOWN, vp2=N1_DOWN, vp3=OK_ALL), T0).publish
    assert req.node == "n1" and "2/3" in req.reason  # type: ignore[union-attr]


def test_withdrawals_are_rate_limited() -> None:
    j = Judge("vp1", JudgeParams(max_withdrawals_per_min=3))
    published = []
    for i in range(5):
        vip = f"203.0.113.{20 + i}"
        topo = VipTopology(vip=ip_address(vip), port=80, protocol="tcp", probe="http-80", cluster="lab",
                           primary=("n1", "n2"))  # fmt: skip
        o = [obs("vp1", p, ok, T0, vip) for p, ok in N1_DOWN.items()]
        published += j.judge(topo, o, T0).publish
    assert len(published) == 3
    t = T0 + timedelta(seconds=61)
    topo = VipTopology(vip=ip_address("203.0.113.24"), port=80, protocol="tcp", probe="http-80", cluster="lab",
                       primary=("n1", "n2"))  # fmt: skip
    assert len(j.judge(topo, [obs("vp1", p, ok, t, "203.0.113.24") for p, ok in N1_DOWN.items()], t).publish) == 1


def test_stale_observations_are_ignored() -> None:
    j = Judge("vp1")
    old = T0 - timedelta(seconds=60)
    r = j.judge(TOPO, scene(old, vp1=N1_DOWN), T0)
    assert r.publish == [] and r.view.vantages == [] and not r.changed


def test_a_request_without_evidence_is_not_refreshed_and_lapses() -> None:
    j = Judge("vp1", JudgeParams(request_ttl_s=30))
    [req] = j.judge(TOPO, scene(T0, vp1=N1_DOWN), T0).publish
    # the monitor loses its view (no fresh observation): no refresh, so routectl lets it expire
    for dt in (11, 21, 31):
        t = T0 + timedelta(seconds=dt)
        assert j.judge(TOPO, [], t).publish == [], dt
    assert req.expires_at == T0 + timedelta(seconds=30)


def test_everything_breaking_at_once_is_not_blamed_on_the_first_path_to_count_its_failures() -> None:
    """n1's path has counted its failures while n2's path still shows its last success, from before
    n1 started failing: nobody is blamed, because n2 has not been seen working since."""
    j = Judge("vp1")
    n1 = obs("vp1", "n1", False)
    n2_stale = obs("vp1", "n2", True).model_copy(update={"last_ok_at": n1.failing_since})
    routed = obs("vp1", ROUTED, False)
    assert j.judge(TOPO, [n1, n2_stale, routed], T0).publish == []
    # n2 seen working a full interval after n1 began failing: now n1 is blamed
    n2_fresh = n2_stale.model_copy(update={"last_ok_at": n1.failing_since + timedelta(seconds=1.5)})  # type: ignore[operator]
    [req] = j.judge(TOPO, [n1, n2_fresh, routed], T0).publish
    assert req.node == "n1"  # type: ignore[union-attr]


def test_a_node_that_recovers_first_is_no_evidence_against_one_not_probed_since() -> None:
    """After a vantage point's own outage, n2 is probed (and works) before n1 is probed again: n1
    still shows the failures of the outage, but it has not failed since n2 works again."""
    j = Judge("vp1")
    n1 = obs("vp1", "n1", False).model_copy(update={"updated_at": T0 - timedelta(seconds=0.3)})
    n2 = obs("vp1", "n2", True).model_copy(update={"succeeding_since": T0 - timedelta(seconds=0.1)})
    assert j.judge(TOPO, [n1, n2, obs("vp1", ROUTED, True)], T0).publish == []


def test_a_vantage_point_just_back_from_its_own_outage_blames_no_one_for_a_while() -> None:
    j = Judge("vp1", JudgeParams(fail_after=3))
    assert j.judge(TOPO, scene(T0, vp1=ALL_DOWN), T0).publish == []  # blind
    t = T0 + timedelta(seconds=1)
    assert j.judge(TOPO, scene(t, vp1=N1_DOWN), t).publish == []  # n1's path is the last to recover
    t = T0 + timedelta(seconds=7)  # settled (2 x fail_after x interval = 6 s): n1 still fails, now blamed
    [req] = j.judge(TOPO, scene(t, vp1=N1_DOWN), t).publish
    assert req.node == "n1"  # type: ignore[union-attr]


def test_one_lost_probe_on_the_working_path_is_no_blindness() -> None:
    """n1 blackholes the VIP, and the routed path (hashed to n1) fails with it; n2's path, the one
    that works, loses a single probe (a timeout on a loaded machine). The vantage point is not
    blind: n1 is blamed as soon as n2 works again and n1 fails after that, not a settle period
    later (which repeated lost probes would have postponed for good)."""
    j = Judge("vp1", JudgeParams(fail_after=3))
    lost = obs("vp1", "n2", True).model_copy(
        update={"successes": 4, "consecutive_failures": 1, "consecutive_successes": 0, "failing_since": T0,
                "last_ok_at": T0 - timedelta(seconds=1), "succeeding_since": None, "last_result": ProbeResult.TIMEOUT}
    )  # fmt: skip
    assert j.judge(TOPO, [obs("vp1", ROUTED, False), obs("vp1", "n1", False), lost], T0).publish == []
    t = T0 + timedelta(seconds=1.5)
    back = obs("vp1", "n2", True, t).model_copy(
        update={"last_ok_at": T0 + timedelta(seconds=1), "succeeding_since": T0 + timedelta(seconds=1)}
    )
    [req] = j.judge(TOPO, [obs("vp1", ROUTED, False, t), obs("vp1", "n1", False, t), back], t).publish
    assert req.node == "n1" and req.action is RequestAction.WITHDRAW  # type: ignore[union-attr]


def test_a_vantage_point_is_blind_once_every_path_failed_fail_after_minus_one_times() -> None:
    """Paths are probed one after the other: when an outage of the vantage point ends, one path may
    have counted fail_after failures and another one fewer. That is blindness all the same."""
    j = Judge("vp1", JudgeParams(fail_after=3))
    two = {"successes": 3, "consecutive_failures": 2}
    paths = [obs("vp1", p, False).model_copy(update=two) for p in (ROUTED, "n1", "n2")]
    assert j.judge(TOPO, paths, T0).publish == []
    t = T0 + timedelta(seconds=1)
    assert j.judge(TOPO, scene(t, vp1=N1_DOWN), t).publish == []  # n1's path is the last to recover
    t = T0 + timedelta(seconds=7)
    [req] = j.judge(TOPO, scene(t, vp1=N1_DOWN), t).publish
    assert req.node == "n1"  # type: ignore[union-attr]


def test_the_rate_limit_counts_the_stored_withdrawals_of_an_earlier_leader() -> None:
    """A new leader continues the minute's count from the store (vgw_withdrawals), and withdraws
    nothing while that count is unknown."""
    j = Judge("vp2", JudgeParams(max_withdrawals_per_min=2))
    j.recorded_withdrawals = None
    assert j.judge(TOPO, scene(T0, vp1=N1_DOWN), T0).publish == []
    j.recorded_withdrawals = {"earlier-1", "earlier-2"}
    assert j.judge(TOPO, scene(T0, vp1=N1_DOWN), T0).publish == []
    j.recorded_withdrawals = {"earlier-1"}
    [req] = j.judge(TOPO, scene(T0, vp1=N1_DOWN), T0).publish
    # once stored, our own withdrawal is not counted twice
    j.recorded_withdrawals = {"earlier-1", req.request_id}
    assert len(j.new_withdrawals.keys() | j.recorded_withdrawals) == 2


def test_a_success_sent_after_the_failure_was_seen_is_evidence_and_one_sent_before_is_not() -> None:
    j = Judge("vp1")
    n1 = obs("vp1", "n1", False)
    assert n1.failing_since is not None
    before = obs("vp1", "n2", True).model_copy(update={"last_ok_at": n1.failing_since - timedelta(milliseconds=1)})
    assert j.judge(TOPO, [n1, before, obs("vp1", ROUTED, False)], T0).publish == []
    after = before.model_copy(update={"last_ok_at": n1.failing_since + timedelta(milliseconds=1)})
    [req] = j.judge(TOPO, [n1, after, obs("vp1", ROUTED, False)], T0).publish
    assert req.node == "n1"  # type: ignore[union-attr]
