"""Fixtures of routectl's acceptance tests: a BGP lab (BIRD 2 in namespaces), the real config store,
per-node health buckets, forwarder heartbeats and routectl processes -- all removed afterwards, also
when a test fails."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.routectl.app import Routectl
from services.routectl.settings import RoutectlSettings
from tests.routectl.harness import (
    BACKENDS,
    BACKENDS6,
    VIP,
    VIP6,
    Health,
    Heartbeat,
    RoutectlProc,
    commit,
    make_doc,
    until,
)
from tests.routectl.lab import Lab, kill_tree_leftovers
from tests.support.inprocess import running
from tests.support.nats_server import NatsServer
from vgw.bus import Bus
from vgw.config import ConfigDocument
from vgw.config.store import ConfigStore
from vgw.runtime import Runtime

pytestmark = pytest.mark.integration


def _need_root_and_bird() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("bird") is None and not Path("/usr/sbin/bird").exists():
        pytest.fail("BIRD 2 is missing: run `make setup` (bird2 is in scripts/apt-packages.txt)")


@dataclass
class BgpEnv:
    lab: Lab
    bus: Bus
    nats: NatsServer
    store: ConfigStore
    rundir: Path
    revision: int = 0
    health: dict[int, Health] = field(default_factory=dict)
    beats: dict[int, Heartbeat] = field(default_factory=dict)
    procs: dict[int, RoutectlProc] = field(default_factory=dict)
    settings: dict[str, object] = field(default_factory=dict)
    """Settings every routectl of this env gets (a test's own settings override them)."""

    async def apply(self, doc: ConfigDocument) -> int:
        self.revision = await commit(self.store, doc)
        for hb in self.beats.values():
            hb.revision = self.revision
        return self.revision

    def routectl(self, i: int, **settings: object) -> RoutectlProc:
        old = self.procs.get(i)
        if old is not None:
            old.close()
        merged = {**self.settings, **settings}
        p = self.procs[i] = RoutectlProc(self.lab, i, self.nats.url, self.rundir, **merged).start()
        return p

    def logs(self) -> str:
        parts = [f"--- routectl n{i} ---\n{p.log_tail()}" for i, p in self.procs.items()]
        return "\n".join(parts)


async def make_env(
    tmp_path: Path, bus: Bus, nats: NatsServer, nodes: int, password: str | None = None, ipv6: bool = False
) -> AsyncIterator[BgpEnv]:
    """``ipv6``: a dual-stack lab and document (make_doc(ipv6=True)), every backend of both VIPs
    healthy, heartbeats listing both VIPs, and routectl following the store without re-validating
    (the API refuses IPv6 VIPs while the forwarder is IPv4-only: VGW_CONFIG_RECHECK=false is the
    documented switch for test rigs that commit such documents)."""
    _need_root_and_bird()
    # A short private directory: it holds Unix sockets (path limit 108) and marks our processes.
    rundir = Path(tempfile.mkdtemp(prefix="vrc"))
    lab = Lab(tmp_path / "lab", nodes=nodes, password=password, ipv6=ipv6)
    env: BgpEnv | None = None
    try:
        lab.start()
        store = await ConfigStore(bus).open()
        env = BgpEnv(lab=lab, bus=bus, nats=nats, store=store, rundir=rundir)
        if ipv6:
            env.settings["config_recheck"] = False
        await env.apply(make_doc(nodes, ipv6=ipv6))
        for i in range(1, nodes + 1):
            env.health[i] = await Health.open(bus, f"vgw_health_n{i}")
            await env.health[i].set_all(True, [*BACKENDS, *BACKENDS6] if ipv6 else BACKENDS)
            env.beats[i] = hb = Heartbeat(bus, f"n{i}", env.revision)
            if ipv6:
                hb.vips = [VIP, VIP6]
            hb.start()
        yield env
    finally:
        failed = False
        if env is not None:
            for hb in env.beats.values():
                await hb.stop()
            for p in env.procs.values():
                p.close()
            (tmp_path / "routectl-logs.txt").write_text(env.logs())
        lab.close()
        leftovers = kill_tree_leftovers(str(rundir))
        shutil.rmtree(rundir, ignore_errors=True)
        failed = bool(leftovers)
        assert not failed, f"processes left behind: {leftovers}"


@asynccontextmanager
async def inprocess_routectl(env: BgpEnv, **settings: Any) -> AsyncIterator[tuple[Routectl, Runtime[RoutectlSettings]]]:
    """routectl for n1 in the test's own process (real NATS, BIRD lab and ExaBGP), ready."""
    values: dict[str, Any] = {
        "node_id": "n1", "nats_url": env.nats.url, "instance_id": "routectl-n1-inprocess",
        "exabgp_netns": env.lab.node_ns(1), "run_dir": env.rundir / "n1-inprocess", "health_bucket": "vgw_health_n1",
        "hold_down_s": 0, "tick_s": 0.1, "startup_wait_s": 1, **settings,
    }  # fmt: skip
    cfg = RoutectlSettings(**values)
    app = Routectl(cfg)
    async with running("routectl", app, cfg) as rt:
        await until(lambda: app.ready, 30, what="routectl ready")
        yield app, rt


@pytest.fixture
async def bgp2(tmp_path: Path, bus: Bus, nats_server: NatsServer) -> AsyncIterator[BgpEnv]:
    async for env in make_env(tmp_path, bus, nats_server, 2):
        yield env


@pytest.fixture
async def bgp1(tmp_path: Path, bus: Bus, nats_server: NatsServer) -> AsyncIterator[BgpEnv]:
    async for env in make_env(tmp_path, bus, nats_server, 1):
        yield env


@pytest.fixture
async def bgp2_v6(tmp_path: Path, bus: Bus, nats_server: NatsServer) -> AsyncIterator[BgpEnv]:
    """Two nodes, dual-stack: each with an IPv4 and an IPv6 session to BIRD, serving VIP and VIP6."""
    async for env in make_env(tmp_path, bus, nats_server, 2, ipv6=True):
        yield env


@pytest.fixture
async def bgp1_md5(tmp_path: Path, bus: Bus, nats_server: NatsServer) -> AsyncIterator[BgpEnv]:
    async for env in make_env(tmp_path, bus, nats_server, 1, password="vgw-md5-test"):
        yield env
