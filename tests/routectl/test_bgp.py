"""routectl against a real BIRD 2 router in network namespaces (issue #7 acceptance).

Every test runs real routectl processes (ExaBGP 5 inside each node's namespace), a real
nats-server, the real config store, and checks the router's RIB (``birdc``) and kernel FIB
(``ip route``). Damping is off unless a test says otherwise; BGP hold time is 3 s.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.config.conftest import ConfigService
from tests.routectl.conftest import BgpEnv
from tests.routectl.harness import BACKENDS, PREFIX, VIP, make_doc, metrics_of, until
from tests.routectl.lab import node_ip, processes_with
from vgw.bus import Received
from vgw.config import ConfigDocument
from vgw.events import (
    ClusterWithdrawRequest,
    NodeWithdrawRequest,
    RequestAction,
    RouteReason,
    RouteState,
    VipAnnounce,
    VipWithdraw,
)
from vgw.routes import ROUTES_BUCKET, RouteEntry, route_key
from vgw.store import KvStore
from vgw.withdraw_requests import RequestInForce, entry_key, open_requests

pytestmark = pytest.mark.integration

N1, N2 = node_ip(1), node_ip(2)


async def ecmp_up(env: BgpEnv, timeout: float = 30.0) -> None:
    both = {N1, N2}
    await until(lambda: env.lab.fib_next_hops(VIP) == both, timeout, what=f"ECMP {both}\n{env.logs()}")


async def test_ecmp_then_health_withdraw_keeps_the_other_path(
    bgp2: BgpEnv, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    env = bgp2
    events: list[Received] = []

    async def on_event(r: Received) -> None:
        events.append(r)

    await env.bus.subscribe(on_event, types=[VipAnnounce, VipWithdraw])
    trace_file = tmp_path / "routectl-n1-spans.jsonl"
    env.routectl(1, trace_file=trace_file)
    env.routectl(2)

    # Both nodes announce: one ECMP route with both next hops, in BIRD's RIB and its kernel FIB.
    await ecmp_up(env)
    assert env.lab.rib_next_hops(PREFIX) == {N1, N2}
    assert env.lab.protocols() == {"n1": "Established", "n2": "Established"}

    # Every backend down in node 1's view: node 1 withdraws within 1 s; the router keeps node 2.
    down_ids = [await env.health[1].set(b, up=False) for b in BACKENDS]
    t0 = time.monotonic()
    took = await until(lambda: env.lab.rib_next_hops(PREFIX) == {N2}, 5.0, step=0.02, what="n1 withdrawn")
    assert took < 1.0, f"withdraw took {took:.2f}s"
    assert env.lab.fib_next_hops(VIP) == {N2}
    print(f"health event -> withdrawn at the router: {(time.monotonic() - t0) * 1000:.0f} ms")

    # The decision is explained: event with reason and cause, and the KV entry.
    await until(lambda: any(isinstance(r.event, VipWithdraw) for r in events), 5.0, what="vip.withdraw event")
    w = next(r.event for r in events if isinstance(r.event, VipWithdraw))
    assert w.node == "n1" and str(w.vip) == VIP
    assert w.reason == RouteReason.BELOW_LOW_WATERMARK
    assert w.previous_state == RouteState.ANNOUNCED
    assert w.cause_event_id in down_ids
    assert w.healthy_backends == 0 and w.total_backends == 2
    routes = await KvStore.open(env.bus, ROUTES_BUCKET, RouteEntry)
    entry = await routes.get(route_key("n1", VIP))
    assert entry is not None and entry.value.state == RouteState.WITHDRAWN
    assert entry.value.reason == RouteReason.BELOW_LOW_WATERMARK
    assert entry.value.gates["health"].ok is False and entry.value.gates["forwarder"].ok is True
    n2 = await routes.get(route_key("n2", VIP))
    assert n2 is not None and n2.value.state == RouteState.ANNOUNCED

    # One backend back: node 1 announces again (low = high = 1).
    await env.health[1].set(BACKENDS[0], up=True)
    await until(lambda: env.lab.fib_next_hops(VIP) == {N1, N2}, 5.0, what="n1 back")

    # SIGTERM withdraws everything before exiting.
    assert env.procs[2].terminate() == 0
    await until(lambda: env.lab.rib_next_hops(PREFIX) == {N1}, 5.0, what="n2 withdrawn on SIGTERM")
    assert any(
        isinstance(r.event, VipWithdraw) and r.event.node == "n2" and r.event.reason == RouteReason.SHUTDOWN
        for r in events
    )

    # The withdrawal is in the trace of the backend.down that caused it, and links to it.
    assert env.procs[1].terminate() == 0
    sent = next(
        s
        for s in spans.get_finished_spans()
        if s.name == "send vgw.v1.backend.down" and (s.attributes or {}).get("messaging.message.id") == w.cause_event_id
    )
    cause_trace = f"0x{sent.context.trace_id:032x}"
    decided = [
        sp
        for line in trace_file.read_text().splitlines()
        if (sp := json.loads(line))["name"] == "routectl decide"
        and sp["attributes"].get("vgw.route.reason") == "below_low_watermark"
    ]
    assert decided, "no 'routectl decide' span for the withdrawal"
    assert decided[0]["context"]["trace_id"] == cause_trace
    assert decided[0]["links"] and decided[0]["links"][0]["context"]["trace_id"] == cause_trace


async def test_heartbeats_stop_withdraws_within_bound(bgp2: BgpEnv) -> None:
    env = bgp2
    env.routectl(1)
    env.routectl(2)
    await ecmp_up(env)
    await env.beats[1].stop()
    last = env.beats[1].last_sent
    await until(lambda: env.lab.rib_next_hops(PREFIX) == {N2}, 8.0, step=0.05, what="n1 withdrawn")
    took = time.monotonic() - last
    print(f"last heartbeat -> withdrawn at the router: {took:.2f}s (bound 3 s + 1 s)")
    assert took < 4.0
    # Heartbeats again: announced again.
    env.beats[1].start()
    await ecmp_up(env, 10.0)


async def test_kill9_drops_session_and_restart_waits_for_gates(bgp2: BgpEnv) -> None:
    env = bgp2
    env.routectl(1)
    env.routectl(2)
    await ecmp_up(env)

    env.procs[1].kill9()
    # The speaker dies with routectl: the session goes down and the router loses node 1's route.
    await until(lambda: env.lab.protocols().get("n1") != "Established", 3.0, what="n1 session down")
    await until(lambda: env.lab.rib_next_hops(PREFIX) == {N2}, 2.0, what="n1 route gone")
    assert env.lab.fib_next_hops(VIP) == {N2}

    # Restart while node 1's forwarder is silent: the session comes back but the VIP does not.
    await env.beats[1].stop()
    await asyncio.sleep(3.5)  # the last heartbeat is now stale
    env.routectl(1)
    await until(lambda: env.lab.protocols().get("n1") == "Established", 20.0, what=f"n1 session up\n{env.logs()}")
    await asyncio.sleep(1.5)
    assert env.lab.rib_next_hops(PREFIX) == {N2}, "announced before the gates held"
    # The forwarder reports again: now it comes back.
    env.beats[1].start()
    await ecmp_up(env, 10.0)


def vgwctl(env: BgpEnv, svc: ConfigService, *args: str) -> str:
    res = subprocess.run(
        [str(Path(sys.executable).parent / "vgwctl"), *args, "--config-addr", svc.addr],
        env={**svc.env, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, f"vgwctl {' '.join(args)}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


async def test_isolate_and_restore(bgp2: BgpEnv, tmp_path: Path, child_env: dict[str, str]) -> None:
    env = bgp2
    svc = ConfigService(env.nats, tmp_path / "config", child_env)
    await asyncio.to_thread(svc.start)
    try:
        env.routectl(1)
        env.routectl(2)
        await ecmp_up(env)
        await asyncio.to_thread(vgwctl, env, svc, "node", "isolate", "n1", "--reason", "maintenance")
        await until(lambda: env.lab.rib_next_hops(PREFIX) == {N2}, 5.0, what="n1 withdrawn when isolated")
        routes = await KvStore.open(env.bus, ROUTES_BUCKET, RouteEntry)
        entry = await routes.get(route_key("n1", VIP))
        assert entry is not None and entry.value.reason == RouteReason.NODE_ISOLATED
        await asyncio.to_thread(vgwctl, env, svc, "node", "restore", "n1")
        await ecmp_up(env, 10.0)
    finally:
        await asyncio.to_thread(svc.stop)


async def test_deprioritise_keeps_route_with_worse_attributes(bgp2: BgpEnv) -> None:
    env = bgp2
    await env.apply(make_doc(2, on_unhealthy="deprioritise"))
    env.routectl(1)
    env.routectl(2)
    await ecmp_up(env)
    await env.health[1].set_all(False)

    def deprioritised() -> bool:
        rib = env.lab.rib(PREFIX)
        return "BGP.med: 1000" in rib and "(65000,666)" in rib

    await until(deprioritised, 5.0, what="deprioritised attributes at the router")
    rib = env.lab.rib(PREFIX)
    print(rib)
    assert env.lab.rib_next_hops(PREFIX) == {N1, N2}, "the deprioritised path must stay in the RIB"
    assert "BGP.as_path: 64513 64513 64513" in rib
    assert "(65000,100)" in rib
    # The router prefers node 2 now: its FIB has only node 2 (MED/AS path break the tie).
    await until(lambda: env.lab.fib_next_hops(VIP) == {N2}, 5.0, what="FIB prefers n2")
    # Metrics tell the same story.
    text = await asyncio.to_thread(metrics_of, env.procs[1])
    assert 'vgw_routectl_bgp_peer_up{peer="192.0.2.1"} 1.0' in text
    assert 'vgw_routectl_vips{state="deprioritised"} 1.0' in text
    assert 'vgw_routectl_decisions_total{reason="below_low_watermark",state="deprioritised"} 1.0' in text
    assert "vgw_routectl_speaker_up 1.0" in text
    await env.health[1].set_all(True)
    await ecmp_up(env, 10.0)


async def test_flapping_backend_is_damped(bgp1: BgpEnv) -> None:
    env = bgp1
    await env.apply(make_doc(1, backends=BACKENDS[:1]))
    env.routectl(1, hold_down_s=3, flap_half_life_s=60)
    await until(lambda: env.lab.fib_next_hops(VIP) == {N1}, 30.0, what=f"announced\n{env.logs()}")

    samples: list[bool] = [True]  # announced: checked just above
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            samples.append(await asyncio.to_thread(lambda: bool(env.lab.rib_next_hops(PREFIX))))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    # The backend flaps every 2 s for 12 s.
    up = True
    for _ in range(6):
        up = not up
        await env.health[1].set(BACKENDS[0], up=up)
        await asyncio.sleep(2.0)
    await env.health[1].set(BACKENDS[0], up=True)
    # Stable again: announced after the hold-down (3 s).
    await until(lambda: bool(env.lab.rib_next_hops(PREFIX)), 10.0, what="re-announced after the hold-down")
    stop.set()
    await sampler
    samples.append(await asyncio.to_thread(lambda: bool(env.lab.rib_next_hops(PREFIX))))
    changes = sum(1 for a, b in itertools.pairwise(samples) if a != b)
    print(f"route changes at the router while the backend flapped 6 times: {changes}")
    # One withdrawal at the first failure, one announcement once stable: nothing in between.
    assert changes == 2, samples


async def test_withdraw_requests_survive_restart_and_expire(bgp2: BgpEnv) -> None:
    env = bgp2
    env.routectl(1)
    env.routectl(2)
    await ecmp_up(env)
    # An operator asks node 1 to withdraw every VIP (no expiry), and, separately, for a minute.
    await env.bus.publish(
        NodeWithdrawRequest(
            node="n1", request_id="op-1", action=RequestAction.WITHDRAW, requester="operator/t", reason="maintenance"
        )
    )
    await until(lambda: env.lab.rib_next_hops(PREFIX) == {N2}, 5.0, what="n1 withdrawn on request")
    # routectl restarts: the request is still in force (replayed from the stream before deciding).
    env.procs[1].kill9()
    env.routectl(1)
    await until(lambda: env.lab.protocols().get("n1") == "Established", 20.0, what="n1 session up again")
    await asyncio.sleep(1.5)
    assert env.lab.rib_next_hops(PREFIX) == {N2}, "a request in force was forgotten across a restart"
    # A restore ends it; a request with an expiry lapses by itself.
    await env.bus.publish(
        NodeWithdrawRequest(
            node="n1", request_id="op-2", action=RequestAction.RESTORE, requester="operator/t", reason="done"
        )
    )
    await ecmp_up(env, 10.0)
    await env.bus.publish(
        NodeWithdrawRequest(
            node="n1",
            request_id="mon-1",
            action=RequestAction.WITHDRAW,
            vip=VIP,
            requester="monitor/vp-1",
            reason="blackhole",
            expires_at=datetime.now(UTC) + timedelta(seconds=2),
        )
    )
    await until(lambda: env.lab.rib_next_hops(PREFIX) == {N2}, 5.0, what="n1 withdrawn on the monitor's request")
    await ecmp_up(env, 10.0)


async def test_monitor_requests_in_force_are_read_from_kv_at_start(bgp2: BgpEnv) -> None:
    """The monitor's requests in force are state in ``vgw_requests`` (not a replay of the event
    stream): a routectl that starts finds one there -- no event of it anywhere -- and honours it
    before its first announcement; one that has lapsed is not honoured."""
    env = bgp2
    env.routectl(2)
    await until(lambda: env.lab.rib_next_hops(PREFIX) == {N2}, 30.0, what=f"n2 announces\n{env.logs()}")
    requests = await open_requests(env.bus, ttl_s=300)
    routes = await KvStore.open(env.bus, ROUTES_BUCKET, RouteEntry, history=5)
    now = datetime.now(UTC)
    entry = RequestInForce(
        kind="node", target="n1", vip=None, request_id="mon-kv-1", requester="monitor/vp-1", reason="blackhole",
        issued_at=now, expires_at=now + timedelta(minutes=5), refreshed_at=now, token=1,
    )  # fmt: skip
    await requests.put(entry_key("node", "n1", None), entry)

    async def decided(reason: RouteReason, after: datetime) -> None:
        deadline = time.monotonic() + 20
        while True:
            e = await routes.get(route_key("n1", VIP))
            if e is not None and e.value.decided_at >= after and e.value.reason == reason:
                return
            assert time.monotonic() < deadline, f"n1 not decided {reason.value}: {e}\n{env.logs()}"
            await asyncio.sleep(0.05)

    started = datetime.now(UTC)
    env.routectl(1)
    await decided(RouteReason.NODE_WITHDRAW_REQUEST, started)
    await until(lambda: env.lab.protocols().get("n1") == "Established", 20.0, what="n1 session up")
    assert env.lab.rib_next_hops(PREFIX) == {N2}, "announced despite a request in force"
    # lapsed (the server keeps it until its TTL, but it says it has expired): announced
    await requests.put(
        entry_key("node", "n1", None), entry.model_copy(update={"expires_at": datetime.now(UTC) - timedelta(seconds=1)})
    )
    env.procs[1].kill9()
    started = datetime.now(UTC)
    env.routectl(1)
    await decided(RouteReason.GATES_OK, started)
    await ecmp_up(env)


async def test_tcp_md5_session(bgp1_md5: BgpEnv) -> None:
    env = bgp1_md5
    await env.apply(make_doc(1, password="vgw-md5-test"))
    env.routectl(1)
    await until(lambda: env.lab.fib_next_hops(VIP) == {N1}, 30.0, what=f"announced over TCP-MD5\n{env.logs()}")
    assert env.lab.protocols() == {"n1": "Established"}


async def test_graceful_restart_option_keeps_routes_over_a_restart(bgp2: BgpEnv) -> None:
    env = bgp2
    env.routectl(1, graceful_restart_s=30)
    env.routectl(2)
    await ecmp_up(env)
    assert env.procs[1].terminate() == 0
    # No NOTIFICATION: BIRD keeps node 1's route (stale) while the session is down.
    await until(lambda: env.lab.protocols().get("n1") != "Established", 5.0, what="n1 session down")
    await asyncio.sleep(1.0)
    assert env.lab.rib_next_hops(PREFIX) == {N1, N2}
    assert "graceful restart active" in env.lab.birdc("show", "protocols", "all", "n1").stdout
    env.routectl(1, graceful_restart_s=30)
    await until(lambda: env.lab.protocols().get("n1") == "Established", 20.0, what="n1 session back")
    await ecmp_up(env, 10.0)
    assert "stale" not in env.lab.birdc("show", "route", PREFIX, "all").stdout.lower()


async def test_fail_static_while_nats_is_down(bgp1: BgpEnv) -> None:
    env = bgp1
    env.routectl(1)
    await until(lambda: env.lab.fib_next_hops(VIP) == {N1}, 30.0, what=f"announced\n{env.logs()}")
    # NATS goes away for longer than the heartbeat bound: routectl keeps its decisions.
    await asyncio.to_thread(env.nats.stop, True)
    await asyncio.sleep(4.5)
    assert env.lab.fib_next_hops(VIP) == {N1}, "withdrawn because NATS was unreachable"
    await asyncio.to_thread(env.nats.start)
    # Back: heartbeats flow again, the route stays; then the forwarder really stops.
    await asyncio.sleep(2.0)
    assert env.lab.fib_next_hops(VIP) == {N1}
    await env.beats[1].stop()
    await until(lambda: not env.lab.fib_next_hops(VIP), 8.0, what="withdrawn once heartbeats stop for real")


async def test_speaker_restarts_when_exabgp_dies(bgp1: BgpEnv) -> None:
    env = bgp1
    env.routectl(1)
    await until(lambda: env.lab.fib_next_hops(VIP) == {N1}, 30.0, what=f"announced\n{env.logs()}")
    conf = str(env.rundir / "n1" / "exabgp.conf")
    (pid,) = [p for p, cmd in processes_with(conf).items() if "bridge.py" not in cmd]
    os.kill(pid, signal.SIGKILL)
    await until(lambda: not env.lab.fib_next_hops(VIP), 3.0, what="route gone with ExaBGP")
    # routectl starts a new ExaBGP and announces again what it decided.
    await until(lambda: env.lab.fib_next_hops(VIP) == {N1}, 20.0, what=f"re-announced\n{env.logs()}")
    assert env.procs[1].alive


async def test_standby_cluster_takes_over_on_a_cluster_withdraw_request(bgp2: BgpEnv) -> None:
    env = bgp2
    raw = make_doc(2).model_dump(mode="json")
    raw["clusters"] = [{"name": "c1", "standby": "c2"}, {"name": "c2"}]
    raw["nodes"][1]["cluster"] = "c2"
    await env.apply(ConfigDocument.model_validate(raw))
    env.routectl(1)
    env.routectl(2)
    # Both announce; the standby node with its worse attributes, so the router uses node 1.
    await until(lambda: env.lab.rib_next_hops(PREFIX) == {N1, N2}, 30.0, what=f"both announce\n{env.logs()}")
    await until(lambda: env.lab.fib_next_hops(VIP) == {N1}, 5.0, what="primary preferred")
    assert "BGP.med: 2000" in env.lab.rib(PREFIX)
    # An operator fails the VIP over from cluster c1: node 1 withdraws, the standby carries it.
    await env.bus.publish(
        ClusterWithdrawRequest(
            cluster="c1", request_id="fo-1", action=RequestAction.WITHDRAW, requester="operator/t", reason="failover"
        )
    )
    await until(lambda: env.lab.fib_next_hops(VIP) == {N2}, 5.0, what="standby carries the VIP")
    assert env.lab.rib_next_hops(PREFIX) == {N2}
    await env.bus.publish(
        ClusterWithdrawRequest(
            cluster="c1", request_id="fo-2", action=RequestAction.RESTORE, requester="operator/t", reason="back"
        )
    )
    await until(lambda: env.lab.fib_next_hops(VIP) == {N1}, 5.0, what="primary back")
