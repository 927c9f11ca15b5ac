"""Graceful drain end to end (issue #16): the real config service (``vgwctl node drain``), real
routectl processes with ExaBGP, a real BIRD 2 router and nats-server. The forwarder's connection
count is driven through ``dataplane.status`` on the bus, as the shim publishes it.

* drain -> the router sees node 1's path with the deprioritised attributes (MED 1000, prepends,
  community) and prefers node 2; connections below the threshold -> withdrawn; vgwctl printed the
  progress and returned; events, metrics, KV and ``vgwctl status`` say so; restore -> ECMP again;
* drain with connections that stay -> withdrawn at the timeout, across a routectl restart mid-drain
  (no second ``node.drain.started``, deprioritised again after the restart, never announced normally).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from tests.config.conftest import ConfigService
from tests.routectl.conftest import BgpEnv
from tests.routectl.harness import PREFIX, VIP, metrics_of, until
from tests.routectl.lab import node_ip
from vgw.bus import Received
from vgw.events import DrainEndReason, NodeDrainCompleted, NodeDrainStarted, RouteReason, RouteState, VipAnnounce
from vgw.routes import ROUTES_BUCKET, RouteEntry, route_key
from vgw.store import KvStore

pytestmark = pytest.mark.integration

N1, N2 = node_ip(1), node_ip(2)
VGWCTL = str(Path(sys.executable).parent / "vgwctl")


def path_of(rib: str, next_hop: str) -> str:
    """The attribute lines of the path via ``next_hop`` in ``birdc show route ... all`` output."""
    blocks: list[list[str]] = []
    for line in rib.splitlines():
        if "unicast [" in line:
            blocks.append([])
        if blocks:
            blocks[-1].append(line.strip())
    for b in blocks:
        if f"BGP.next_hop: {next_hop}" in b:
            return "\n".join(b)
    return ""


def deprioritised_at_router(env: BgpEnv) -> bool:
    p = path_of(env.lab.rib(PREFIX), N1)
    return "BGP.med: 1000" in p and "(65000,666)" in p and "BGP.as_path: 64513 64513 64513" in p


async def ctl(svc: ConfigService, *args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        VGWCTL,
        *args,
        "--config-addr",
        svc.addr,
        env={**svc.env, "PATH": os.environ["PATH"]},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(), err.decode()


class Follow:
    """``vgwctl node drain`` running (it follows the drain), its stdout read line by line."""

    def __init__(self, svc: ConfigService, *args: str) -> None:
        self.svc, self.args = svc, args
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Follow:
        self.proc = await asyncio.create_subprocess_exec(
            VGWCTL,
            *self.args,
            "--config-addr",
            self.svc.addr,
            env={**self.svc.env, "PATH": os.environ["PATH"]},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))

    async def wait_line(self, text: str, timeout: float) -> str:
        await until(lambda: any(text in line for line in self.lines), timeout, what=f"vgwctl line {text!r}: {self}")
        return next(line for line in self.lines if text in line)

    async def finish(self, timeout: float) -> tuple[int, str, str]:
        assert self.proc is not None and self.proc.stderr is not None and self._reader is not None
        err = await asyncio.wait_for(self.proc.stderr.read(), timeout)
        await asyncio.wait_for(self._reader, timeout)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        return code, "\n".join(self.lines), err.decode()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    def __str__(self) -> str:
        return "\n".join(self.lines)


async def routes_entry(env: BgpEnv, node: str) -> RouteEntry | None:
    routes = await KvStore.open(env.bus, ROUTES_BUCKET, RouteEntry)
    e = await routes.get(route_key(node, VIP))
    return e.value if e is not None else None


async def shim_at_current_revision(env: BgpEnv) -> None:
    """The heartbeats report the revision the drain committed, as a shim does once it applied it
    (a restarted routectl needs it: the programmed gate)."""
    rev = (await env.store.current_state())[0]
    for hb in env.beats.values():
        hb.revision = rev


@pytest.fixture
async def svc(bgp2: BgpEnv, tmp_path: Path, child_env: dict[str, str]) -> object:
    s = ConfigService(bgp2.nats, tmp_path / "config", child_env)
    await asyncio.to_thread(s.start)
    try:
        yield s
    finally:
        await asyncio.to_thread(s.stop)


async def test_drain_deprioritises_then_withdraws_when_idle(bgp2: BgpEnv, svc: ConfigService) -> None:
    env = bgp2
    events: list[Received] = []

    async def on_event(r: Received) -> None:
        events.append(r)

    await env.bus.subscribe(on_event, types=[NodeDrainStarted, NodeDrainCompleted, VipAnnounce])
    env.beats[1].connections = 40
    env.routectl(1)
    env.routectl(2)
    await until(lambda: env.lab.fib_next_hops(VIP) == {N1, N2}, 30.0, what=f"ECMP\n{env.logs()}")

    # vgwctl drains and follows: it returns once route control reports node 1 drained.
    follow = await Follow(
        svc, "node", "drain", "n1", "--timeout", "2m", "--threshold", "5", "--interval", "1", "--reason", "upgrade"
    ).start()
    try:
        await drain_then_idle(env, svc, follow, events)
    finally:
        follow.kill()


async def drain_then_idle(env: BgpEnv, svc: ConfigService, follow: Follow, events: list[Received]) -> None:
    await until(lambda: deprioritised_at_router(env), 10.0, what=f"worse MED at the router\n{env.logs()}")
    # Both paths stay in the RIB; the router prefers node 2 (the better MED) for new flows.
    assert env.lab.rib_next_hops(PREFIX) == {N1, N2}
    await until(lambda: env.lab.fib_next_hops(VIP) == {N2}, 5.0, what="FIB prefers n2")
    entry = await routes_entry(env, "n1")
    assert entry is not None and (entry.state, entry.reason) == (RouteState.DEPRIORITISED, RouteReason.NODE_DRAINING)
    assert entry.drain is not None and entry.drain.completed is None and entry.drain.threshold == 5
    line = await follow.wait_line("node n1: draining, 40 connections (threshold 5)", 10.0)
    assert "left, 1/1 VIP(s) deprioritised" in line
    assert follow.proc is not None and follow.proc.returncode is None

    code, out, err = await ctl(svc, "status", "-o", "json")
    assert code == 0, err
    st = {n["id"]: n for n in json.loads(out)["nodes"]}
    assert st["n1"]["drain"]["phase"] == "draining" and st["n1"]["drain"]["reported"] is True

    # The connections fall below the threshold: withdrawn, the other path kept.
    env.beats[1].connections = 3
    await until(lambda: env.lab.rib_next_hops(PREFIX) == {N2}, 5.0, what="n1 withdrawn when idle")
    code, out, err = await follow.finish(30.0)
    assert code == 0, (out, err)
    assert out.startswith("node n1: drain: revision")
    assert "node n1: drained (idle) after" in out and "3 connections, 1/1 VIP(s) withdrawn" in out
    print(out)

    entry = await routes_entry(env, "n1")
    assert entry is not None and (entry.state, entry.reason) == (RouteState.WITHDRAWN, RouteReason.NODE_DRAINED)
    started = [r.event for r in events if isinstance(r.event, NodeDrainStarted)]
    done = [r.event for r in events if isinstance(r.event, NodeDrainCompleted)]
    assert len(started) == 1 and started[0].node == "n1" and started[0].cluster == "c1"
    assert started[0].threshold == 5 and started[0].timeout_s == 120 and started[0].vips == 1
    assert len(done) == 1 and done[0].reason == DrainEndReason.IDLE and done[0].active_connections == 3
    assert done[0].started_at == started[0].started_at and 0 < done[0].duration_s < 60
    dep = [r.event for r in events if isinstance(r.event, VipAnnounce) and r.event.reason == RouteReason.NODE_DRAINING]
    assert dep and dep[0].state == RouteState.DEPRIORITISED and dep[0].attributes.med == 1000

    text = await asyncio.to_thread(metrics_of, env.procs[1])
    assert "vgw_routectl_drains_started_total 1.0" in text
    assert 'vgw_routectl_drains_completed_total{reason="idle"} 1.0' in text
    assert 'vgw_routectl_drain_phase{phase="drained"} 1.0' in text
    assert 'vgw_routectl_decisions_total{reason="node_draining",state="deprioritised"} 1.0' in text
    assert 'vgw_routectl_decisions_total{reason="node_drained",state="withdrawn"} 1.0' in text
    assert "vgw_routectl_drain_seconds_count 1.0" in text

    code, out, err = await ctl(svc, "status")
    assert code == 0, err
    assert any(line.split()[:3] == ["n1", "c1", "drained"] and "idle at" in line for line in out.splitlines()), out

    # Restore: normal attributes, ECMP again.
    code, out, err = await ctl(svc, "node", "restore", "n1", "--reason", "upgrade done")
    assert code == 0, err
    await until(lambda: env.lab.fib_next_hops(VIP) == {N1, N2}, 10.0, what="ECMP after restore")
    assert "BGP.med: 1000" not in path_of(env.lab.rib(PREFIX), N1)


async def test_drain_withdraws_at_the_timeout_across_a_routectl_restart(bgp2: BgpEnv, svc: ConfigService) -> None:
    env = bgp2
    events: list[Received] = []

    async def on_event(r: Received) -> None:
        events.append(r)

    await env.bus.subscribe(on_event, types=[NodeDrainStarted, NodeDrainCompleted])
    env.beats[1].connections = 40
    env.routectl(1)
    env.routectl(2)
    await until(lambda: env.lab.fib_next_hops(VIP) == {N1, N2}, 30.0, what=f"ECMP\n{env.logs()}")

    code, out, err = await ctl(svc, "node", "drain", "n1", "--timeout", "20s", "--threshold", "5", "--no-wait")
    assert code == 0 and "withdrawn after 20s at the latest" in out, err
    await shim_at_current_revision(env)
    await until(lambda: deprioritised_at_router(env), 10.0, what="worse MED at the router")

    # routectl restarts mid-drain (SIGTERM withdraws; the new one reads the drain back from KV).
    assert env.procs[1].terminate() == 0
    await until(lambda: env.lab.rib_next_hops(PREFIX) == {N2}, 5.0, what="n1 gone while routectl restarts")
    env.routectl(1)

    seen: list[str] = []

    def back_deprioritised() -> bool:
        p = path_of(env.lab.rib(PREFIX), N1)
        if p:
            seen.append(p)
        return bool(p)

    await until(back_deprioritised, 20.0, step=0.02, what=f"n1 back after the restart\n{env.logs()}")
    assert all("BGP.med: 1000" in p for p in seen), "announced normally after the restart"
    entry = await routes_entry(env, "n1")
    assert entry is not None and entry.reason == RouteReason.NODE_DRAINING

    # The connections stay: the timeout withdraws it (20 s after the drain's start).
    await until(lambda: env.lab.rib_next_hops(PREFIX) == {N2}, 30.0, what=f"withdrawn at the timeout\n{env.logs()}")
    await until(lambda: any(isinstance(r.event, NodeDrainCompleted) for r in events), 5.0, what="completed event")
    started = [r.event for r in events if isinstance(r.event, NodeDrainStarted)]
    done = [r.event for r in events if isinstance(r.event, NodeDrainCompleted)]
    assert len(started) == 1, "the restarted routectl repeated node.drain.started"
    assert len(done) == 1 and done[0].reason == DrainEndReason.TIMEOUT and done[0].active_connections == 40
    assert 20 <= done[0].duration_s < 25
    entry = await routes_entry(env, "n1")
    assert entry is not None and entry.drain is not None and entry.drain.completed == DrainEndReason.TIMEOUT
    text = await asyncio.to_thread(metrics_of, env.procs[1])
    assert 'vgw_routectl_drains_completed_total{reason="timeout"} 1.0' in text

    # Restore ends it.
    code, out, err = await ctl(svc, "node", "restore", "n1")
    assert code == 0, err
    await until(lambda: env.lab.fib_next_hops(VIP) == {N1, N2}, 10.0, what="ECMP after restore")
