"""Route control coalesces a burst of health changes (issue #18, item 2): the changes only mark its
view dirty, and one evaluation runs once they have stopped, from the latest state -- not one per
change. The coalescing window is widened here so that the count is exact on a loaded machine."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address

from prometheus_client import REGISTRY

from tests.routectl.conftest import BgpEnv, inprocess_routectl
from tests.routectl.harness import VIP, make_doc, until
from vgw.events import RouteReason, RouteState

BACKENDS = [f"198.51.100.{i}" for i in range(30, 80)]


def evaluations() -> float:
    return REGISTRY.get_sample_value("vgw_routectl_evaluations_total") or 0.0


async def test_a_burst_of_health_changes_is_one_evaluation(bgp1: BgpEnv) -> None:
    await bgp1.apply(make_doc(1, backends=BACKENDS))
    await bgp1.health[1].set_all(True, BACKENDS)
    # no tick during the burst (tick_s at its maximum); a burst that never pauses for 0.5 s
    async with inprocess_routectl(bgp1, tick_s=5, coalesce_quiet_s=0.5, coalesce_max_s=2) as (app, _rt):
        vip = ip_address(VIP)
        await until(lambda: (d := app._applied.get(vip)) is not None and d.state == RouteState.ANNOUNCED, 30,
                    what="announced over 50 healthy backends")  # fmt: skip
        # settled: no evaluation pending
        before = evaluations()
        await asyncio.gather(*(bgp1.health[1].set(b, False) for b in BACKENDS))
        await until(lambda: evaluations() > before, 10, what="an evaluation after the burst")
        await until(lambda: not app._dirty.is_set(), 10, what="nothing left to evaluate")
        assert evaluations() == before + 1  # 50 changes, one evaluation
        d = app._applied[vip]
        assert d.state == RouteState.WITHDRAWN and d.reason == RouteReason.BELOW_LOW_WATERMARK, d
        assert d.healthy == 0 and d.total == len(BACKENDS), d  # computed from the whole burst
