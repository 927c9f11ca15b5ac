"""routectl announces an IPv6 VIP over IPv6 BGP, by the same gates as an IPv4 one (issue #19: "BIRD's
RIB shows v6 VIPs announced and withdrawn by the same gates as v4").

A dual-stack lab (tests/routectl/lab.py, ``ipv6=True``): each node has an IPv4 and an IPv6 session to
a real BIRD 2, and serves VIP (IPv4) and VIP6 (a /128 from 2001:db8::/32). Real routectl processes with
ExaBGP in the nodes' namespaces, a real nats-server and config store; the forwarder is the heartbeat
stand-in the IPv4 tests use (the DPDK forwarder refuses IPv6 services today, and the API refuses IPv6
VIPs with it, so routectl follows the store with ``config_recheck`` off). Checked at the router: BIRD's
RIB (``birdc show route``) and its namespace's kernel FIB (``ip -6 route``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time

import pytest

from services.routectl.decide import next_hop_for
from tests.routectl.conftest import BgpEnv
from tests.routectl.harness import BACKENDS6, PREFIX, PREFIX6, VIP, VIP6, make_doc, until
from tests.routectl.lab import node_ip, node_ip6
from vgw.bus import Received
from vgw.events import NodeWithdrawRequest, RequestAction, RouteReason, RouteState, VipAnnounce, VipWithdraw
from vgw.routes import ROUTES_BUCKET, RouteEntry, route_key
from vgw.store import KvStore

N1, N2 = node_ip(1), node_ip(2)
N1_6, N2_6 = node_ip6(1), node_ip6(2)


def at_router(env: BgpEnv, v4: set[str], v6: set[str]) -> bool:
    """The router has VIP via ``v4`` and VIP6 via ``v6``, in BIRD's RIB and in its kernel FIB."""
    lab = env.lab
    return (
        lab.rib_next_hops(PREFIX) == v4
        and lab.fib_next_hops(VIP) == v4
        and lab.rib_next_hops(PREFIX6) == v6
        and lab.fib_next_hops(VIP6) == v6
    )


async def routed(env: BgpEnv, v4: set[str], v6: set[str], timeout: float, what: str) -> float:
    return await until(lambda: at_router(env, v4, v6), timeout, what=f"{what}: v4 via {v4}, v6 via {v6}\n{env.logs()}")


async def decided(
    routes: KvStore[RouteEntry], node: str, vip: str, state: RouteState, reason: RouteReason, timeout: float = 5.0
) -> RouteEntry:
    """routectl's decision for ``vip`` on ``node`` in vgw_routes, once it is ``state`` for ``reason``
    (routectl writes it after handing the route to the speaker: it may land after the router saw it)."""
    deadline = time.monotonic() + timeout
    while True:
        entry = await routes.get(route_key(node, vip))
        if entry is not None and (entry.value.state, entry.value.reason) == (state, reason):
            return entry.value
        assert time.monotonic() < deadline, f"{node} {vip}: not {state.value} ({reason.value}): {entry}"
        await asyncio.sleep(0.05)


@pytest.mark.integration
async def test_v6_vip_follows_the_v4_gates(bgp2_v6: BgpEnv) -> None:
    env = bgp2_v6
    both, both6 = {N1, N2}, {N1_6, N2_6}
    events: list[Received] = []

    async def on_event(r: Received) -> None:
        events.append(r)

    await env.bus.subscribe(on_event, types=[VipAnnounce, VipWithdraw])
    routes = await KvStore.open(env.bus, ROUTES_BUCKET, RouteEntry)
    env.routectl(1)
    env.routectl(2)

    # Both nodes announce both VIPs, each over its own family's session: ECMP in the RIB and the FIB.
    # The IPv6 route's next hop is the node's IPv6 address (an IPv4 one is refused by the router).
    await routed(env, both, both6, 30.0, "both nodes announce both VIPs")
    assert env.lab.protocols() == dict.fromkeys(["n1", "n2", "n1v6", "n2v6"], "Established")
    assert "(65000,100)" in env.lab.rib(PREFIX6)
    await decided(routes, "n1", VIP6, RouteState.ANNOUNCED, RouteReason.GATES_OK)

    # health: every IPv6 backend down in node 1's view -> node 1 withdraws VIP6 within 1 s (as VIP in
    # test_bgp); the router keeps node 2's path, and VIP (its backends healthy) stays on both.
    assert env.lab.rib_next_hops(PREFIX6) == both6  # seen there before: the next wait sees it leave
    down_ids = [await env.health[1].set(b, up=False) for b in BACKENDS6]
    took = await until(lambda: env.lab.rib_next_hops(PREFIX6) == {N2_6}, 5.0, step=0.02, what="n1 withdraws VIP6")
    assert took < 1.0, f"withdraw took {took:.2f}s"
    await routed(env, both, {N2_6}, 2.0, "node 1's IPv6 path out of the FIB, IPv4 untouched")
    e = await decided(routes, "n1", VIP6, RouteState.WITHDRAWN, RouteReason.BELOW_LOW_WATERMARK)
    assert e.gates["health"].ok is False and e.gates["forwarder"].ok is True and e.gates["programmed"].ok is True
    assert e.healthy_backends == 0 and e.total_backends == 2

    def withdrawals(node: str) -> list[VipWithdraw]:
        return [
            r.event
            for r in events
            if isinstance(r.event, VipWithdraw) and (r.event.node, str(r.event.vip)) == (node, VIP6)
        ]

    await until(lambda: bool(withdrawals("n1")), 5.0, what="vip.withdraw event of VIP6")
    w = withdrawals("n1")[0]
    assert w.reason == RouteReason.BELOW_LOW_WATERMARK and w.cause_event_id in down_ids
    # One IPv6 backend back: announced again (low = high = 1, no hold-down).
    await env.health[1].set(BACKENDS6[0], up=True)
    await routed(env, both, both6, 5.0, "node 1 announces VIP6 again")
    await decided(routes, "n1", VIP6, RouteState.ANNOUNCED, RouteReason.GATES_OK)

    # programmed: node 1's forwarder stops reporting VIP6 among its VIPs (what a forwarder that
    # refuses the IPv6 service reports) -> withdrawn, VIP stays; reported again -> announced.
    env.beats[1].vips = [VIP]
    await routed(env, both, {N2_6}, 5.0, "VIP6 not programmed on node 1")
    await decided(routes, "n1", VIP6, RouteState.WITHDRAWN, RouteReason.NOT_PROGRAMMED)
    await decided(routes, "n1", VIP, RouteState.ANNOUNCED, RouteReason.GATES_OK)
    env.beats[1].vips = [VIP, VIP6]
    await routed(env, both, both6, 5.0, "VIP6 programmed on node 1 again")

    # requests: an operator withdraws VIP6 alone from node 1; a restore of VIP6 brings it back.
    def request(action: RequestAction) -> NodeWithdrawRequest:
        return NodeWithdrawRequest(
            node="n1", request_id=f"op-v6-{action.value}", action=action, vip=VIP6, requester="operator/t",
            reason="IPv6 maintenance",
        )  # fmt: skip

    await env.bus.publish(request(RequestAction.WITHDRAW))
    await routed(env, both, {N2_6}, 5.0, "VIP6 withdrawn from node 1 on request")
    await decided(routes, "n1", VIP6, RouteState.WITHDRAWN, RouteReason.NODE_WITHDRAW_REQUEST)
    await env.bus.publish(request(RequestAction.RESTORE))
    await routed(env, both, both6, 5.0, "VIP6 restored on node 1")

    # forwarder: node 1's heartbeats stop -> both families withdrawn from node 1 (stale after 3 s);
    # heartbeats again -> both announced again.
    await env.beats[1].stop()
    await routed(env, {N2}, {N2_6}, 8.0, "node 1 withdraws both VIPs when its forwarder is silent")
    await decided(routes, "n1", VIP6, RouteState.WITHDRAWN, RouteReason.FORWARDER_STALE)
    env.beats[1].start()
    await routed(env, both, both6, 10.0, "node 1 announces both again")

    # SIGTERM withdraws both families before exiting.
    assert env.procs[2].terminate() == 0
    await routed(env, {N1}, {N1_6}, 5.0, "node 2 withdrew both VIPs on SIGTERM")
    await until(
        lambda: any(w.reason == RouteReason.SHUTDOWN for w in withdrawals("n2")), 5.0, what="n2's shutdown event"
    )

    # The last announcer of VIP6 withdraws: BIRD holds no route for it at all, nor the kernel.
    await env.health[1].set_all(False, BACKENDS6)
    t0 = time.monotonic()
    await until(lambda: env.lab.rib_lacks(PREFIX6), 5.0, what=f"VIP6 gone from BIRD's RIB\n{env.logs()}")
    print(f"VIP6 out of BIRD's RIB {time.monotonic() - t0:.2f}s after its last backend went down")
    await routed(env, {N1}, set(), 2.0, "VIP6 gone from the FIB, VIP still via node 1")


def test_next_hop_is_of_the_vip_family() -> None:
    """The next hop announced with a VIP is of the VIP's family (services/routectl/decide.py): an
    IPv6 VIP on a node addressed in IPv4 gets none (ExaBGP: ``next-hop self``, the IPv6 session's
    address), never the IPv4 external address the router would refuse."""
    node = make_doc(1, ipv6=True).nodes[0]
    assert node.bgp is not None
    ext = ipaddress.ip_address(N1)
    assert next_hop_for(node, 4) == ext
    assert next_hop_for(node, 6) is None
    nh6, nh4 = ipaddress.ip_address("2001:db8::99"), ipaddress.ip_address("192.0.2.99")
    with_v6 = node.model_copy(update={"bgp": node.bgp.model_copy(update={"next_hop": nh6})})
    assert (next_hop_for(with_v6, 4), next_hop_for(with_v6, 6)) == (ext, nh6)
    with_v4 = node.model_copy(update={"bgp": node.bgp.model_copy(update={"next_hop": nh4})})
    assert (next_hop_for(with_v4, 4), next_hop_for(with_v4, 6)) == (nh4, None)
