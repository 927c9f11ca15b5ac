"""A burst of health changes reaches the forwarder as one delta (issue #18, docs/shim.md "Bursts").

The shim's recompute and forwarder loops run in this process against a real vgw-fwd (ring vdevs);
the inputs are fed exactly as the watches hand them over (``Shim.on_config``/``Shim.on_health``),
all N changes of the burst before the event loop runs again, so the outcome does not depend on
timing: one recompute, one delta apply, and a forwarder state equal to the one computed from scratch
(and to a full apply of it). The apply joins the trace of the burst's first health transition and
links to every transition. The NATS path of the same burst is measured by
tests/bench/bench_mass_transition.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from dataplane.shim.desired import desired_state, render
from dataplane.shim.main import Shim, ShimSettings
from tests.forwarder.shimproc import wait_for
from tests.forwarder.test_shim_desired import canon
from vgw.config import ConfigDocument
from vgw.config.validate import load_document
from vgw.events import BackendState, ProbeResult
from vgw.fwdctl import FwdClient
from vgw.health import HealthEntry, health_key
from vgw.store import Change, Entry, Snapshot

NODE = "n1"
BACKENDS = 40  # per service


def doc_text() -> str:
    def backends(third: int) -> str:
        return "".join(f"          - {{address: 198.18.{third}.{i}, port: 80}}\n" for i in range(1, BACKENDS + 1))

    return f"""
version: 1
clusters: [{{name: lab}}]
nodes:
  - {{id: {NODE}, cluster: lab, external: {{address: 203.0.113.1/24}}, internal: {{address: 198.18.0.1/16}},
     lip_pool: [198.18.0.100]}}
health_checks:
  - {{name: hc, kind: tcp}}
vips:
  - address: 192.0.2.10
    cluster: lab
    services:
      - name: web
        port: 80
        health_check: hc
        backends:
{backends(1)}      - name: api
        port: 8080
        health_check: hc
        backends:
{backends(2)}"""


def entry(ip: str, state: BackendState, traceparent: str | None = None) -> HealthEntry:
    return HealthEntry(
        address=ip,
        port=80,
        check="hc",
        kind="tcp",
        state=state,
        reason=ProbeResult.OK if state == BackendState.UP else ProbeResult.REFUSED,
        since=datetime.now(UTC),
        checker="t",
        traceparent=traceparent,
    )


def applies(mode: str) -> float:
    return REGISTRY.get_sample_value("vgw_shim_applies_total", {"mode": mode, "result": "ok"}) or 0.0


def recomputes() -> float:
    return REGISTRY.get_sample_value("vgw_shim_recompute_seconds_count") or 0.0


@contextlib.asynccontextmanager
async def running(shim: Shim) -> AsyncIterator[None]:
    """The shim's recompute and forwarder loops (what the watches feed), stopped at the end."""
    tasks = [asyncio.create_task(shim._recompute_loop()), asyncio.create_task(shim._forwarder_loop())]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await shim.client.close()


async def test_a_burst_of_health_changes_is_one_delta(ring_fwd: Path, spans: InMemorySpanExporter) -> None:
    doc: ConfigDocument = load_document(doc_text())
    ips = [f"198.18.{t}.{i}" for t in (1, 2) for i in range(1, BACKENDS + 1)]
    health = {health_key(ip, 80, "hc"): entry(ip, BackendState.UP) for ip in ips}
    # a long quiet period: the burst is fed in one go anyway; this keeps the initial apply apart
    shim = Shim(ShimSettings(node_id=NODE, fwd_socket=str(ring_fwd), coalesce_quiet_s=0.05, coalesce_max_s=1.0))
    fwd = FwdClient(str(ring_fwd))
    async with running(shim):
        # config without health computes nothing (it would put every backend in service for a moment)
        shim.on_config(doc, 3)
        shim._recompute()
        assert shim.desired is None
        shim.on_health(Snapshot(entries={k: Entry(k, v, 1) for k, v in health.items()}, revision=1))
        await wait_for(lambda: shim.applied is not None, 10, "the initial full apply")
        assert shim.applied == desired_state(doc, health, NODE, 3)
        full0, delta0, rec0 = applies("full"), applies("delta"), recomputes()
        gen0 = (await fwd.hello())["generation"]

        # The burst: 30 backends down (10 of them with the trace context of their transition), one
        # deleted (no entry: the check's initial state, unknown = up), one down and up again.
        rng = random.Random(18)
        down = rng.sample(ips, 30)
        traced = {ip: f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01" for ip in down[:10]}
        rev = 10
        for ip in down:
            rev += 1
            e = entry(ip, BackendState.DOWN, traced.get(ip))
            health[e.key] = e
            shim.on_health(Change(e.key, Entry(e.key, e, rev), rev))
        gone = next(ip for ip in ips if ip not in down)
        del health[health_key(gone, 80, "hc")]
        shim.on_health(Change(health_key(gone, 80, "hc"), None, rev + 1))
        flap = next(ip for ip in ips if ip not in down and ip != gone)
        for i, state in enumerate((BackendState.DOWN, BackendState.UP)):
            e = entry(flap, state)
            health[e.key] = e
            shim.on_health(Change(e.key, Entry(e.key, e, rev + 2 + i), rev + 2 + i))

        want = desired_state(doc, health, NODE, 3)
        await wait_for(lambda: shim.applied == want, 10, "the burst applied")
        # Once applied nothing else is pending: the counts below are final.
        assert not shim.dirty.is_set()
        assert (applies("delta") - delta0, applies("full") - full0) == (1, 0)
        assert recomputes() - rec0 == 1
        assert (await fwd.hello())["generation"] == gen0 + 1
        got = await fwd.config()
        assert canon(got) == canon(render(want, gen0 + 1))
        drained = {ln.split()[2] for ln in got.splitlines() if ln.startswith("backend ") and ln.endswith(" draining")}
        assert drained == set(down)

        # One apply span for the burst: a child of the first traced transition, linked to all ten.
        [span] = [s for s in spans.get_finished_spans() if s.name == "apply forwarder state"][-1:]
        assert span.attributes is not None and span.attributes["vgw.apply.mode"] == "delta"
        assert span.attributes["vgw.apply.causes"] == 10
        first_trace = int(traced[down[0]].split("-")[1], 16)
        assert span.context is not None and span.context.trace_id == first_trace
        assert {link.context.trace_id for link in span.links} == {int(t.split("-")[1], 16) for t in traced.values()}
    await fwd.close()
