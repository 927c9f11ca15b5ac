"""What routectl's acceptance tests drive: config in the real config store, health in KV (plus the
backend events healthcheck would publish), forwarder heartbeats, and routectl processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.routectl.lab import NODE_ASN, ROUTER_ASN, ROUTER_IP, ROUTER_IP6, Lab, node_ip, node_ip6
from vgw.bus import Bus
from vgw.config import ConfigDocument, health_key
from vgw.config.store import ConfigStore
from vgw.events import (
    BackendDown,
    BackendState,
    BackendUp,
    CheckKind,
    DataplaneStatus,
    Endpoint,
    ForwarderState,
    ProbeResult,
)
from vgw.health import HealthEntry
from vgw.store import KvStore

REPO = Path(__file__).resolve().parents[2]
VIP = "203.0.113.10"
PREFIX = f"{VIP}/32"
BACKENDS = ["198.51.100.21", "198.51.100.22"]
CHECK = "web-tcp"
# The IPv6 VIP of a dual-stack document (make_doc(ipv6=True)), its service and backends.
VIP6 = "2001:db8:10::10"
PREFIX6 = f"{VIP6}/128"
BACKENDS6 = ["2001:db8:5::21", "2001:db8:5::22"]


def make_doc(
    nodes: int = 2,
    *,
    isolated: tuple[int, ...] = (),
    on_unhealthy: str = "withdraw",
    backends: list[str] = BACKENDS,
    password: str | None = None,
    vip_enabled: bool = True,
    ipv6: bool = False,
) -> ConfigDocument:
    """The test document: cluster c1 of ``nodes`` nodes peering with the lab's router, VIP with
    service ``web`` on ``backends``. ``ipv6``: dual-stack -- each node also peers with the router
    over IPv6 (from its own IPv6 address) and serves VIP6 (service ``web6`` on BACKENDS6, the same
    BGP policy and health check). The API refuses IPv6 VIPs today (the forwarder is IPv4-only), so
    a routectl following such a document runs with ``config_recheck=False``."""
    peer: dict[str, Any] = {"address": ROUTER_IP, "asn": ROUTER_ASN, "hold_time": 3}
    if password:
        peer["password"] = password

    def peers(i: int) -> list[dict[str, Any]]:
        if not ipv6:
            return [peer]
        return [peer, {**peer, "address": ROUTER_IP6, "local_address": node_ip6(i)}]

    def vip(address: str, service: str, addrs: list[str]) -> dict[str, Any]:
        return {
            "address": address,
            "cluster": "c1",
            "enabled": vip_enabled,
            "bgp": {
                "communities": ["65000:100"],
                "deprioritised": {"med": 1000, "as_path_prepend": 2, "communities": ["65000:666"]},
                "on_unhealthy": on_unhealthy,
                "low_watermark": 1,
                "high_watermark": 1,
            },
            "services": [
                {
                    "name": service,
                    "port": 80,
                    "health_check": CHECK,
                    "backends": [{"address": b, "port": 8080} for b in addrs],
                }
            ],
        }

    return ConfigDocument.model_validate(
        {
            "clusters": [{"name": "c1"}],
            "nodes": [
                {
                    "id": f"n{i}",
                    "cluster": "c1",
                    "state": "isolated" if i in isolated else "active",
                    "external": {"address": f"{node_ip(i)}/24", "gateway": ROUTER_IP},
                    "internal": {"address": f"198.51.100.{i}/24"},
                    "lip_pool": [f"198.51.100.{100 + i}/32"],
                    "bgp": {"asn": NODE_ASN, "router_id": node_ip(i), "peers": peers(i)},
                }
                for i in range(1, nodes + 1)
            ],
            "health_checks": [{"name": CHECK, "kind": "tcp", "interval": 1.0}],
            "vips": [vip(VIP, "web", backends), *([vip(VIP6, "web6", BACKENDS6)] if ipv6 else [])],
        }
    )


class Heartbeat:
    """Publishes a node's ``dataplane.status`` like its shim would, until stopped."""

    def __init__(self, bus: Bus, node: str, revision: int, interval_s: float = 0.5) -> None:
        self.bus, self.node, self.revision, self.interval_s = bus, node, revision, interval_s
        self.vips = [VIP]
        self.forwarder = ForwarderState.UP
        self.connections: int | None = None
        """The forwarder's connection count to report (``active_connections``); None: not reported."""
        self.last_sent = 0.0
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._seq = 0

    def start(self) -> Heartbeat:
        if self._task is None or self._task.done():
            self._running = True
            self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        """Stop publishing. The flag matters: on Python 3.11 a cancel that races with a completing
        ``wait_for`` inside the publish can be swallowed, and the loop would go on."""
        self._running = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5.0)
            self._task = None

    async def _run(self) -> None:
        while self._running:
            await self.bus.publish(
                DataplaneStatus(
                    node=self.node,
                    seq=self._seq,
                    interval_s=self.interval_s,
                    forwarder=self.forwarder,
                    config_revision=self.revision,
                    vips=list(self.vips),
                    services=1,
                    active_connections=self.connections,
                    half_open_connections=0 if self.connections is not None else None,
                )
            )
            self.last_sent = time.monotonic()
            self._seq += 1
            await asyncio.sleep(self.interval_s)


class Health:
    """Writes a health bucket as the healthcheck service would, and publishes the transitions."""

    def __init__(self, bus: Bus, store: KvStore[HealthEntry]) -> None:
        self.bus, self.store = bus, store

    @classmethod
    async def open(cls, bus: Bus, bucket: str) -> Health:
        return cls(bus, await KvStore.open(bus, bucket, HealthEntry))

    async def set(self, backend: str, up: bool) -> str:
        """Set one backend's health; returns the id of the backend.up/down event. An IPv6 backend is
        one of VIP6's service ``web6`` (make_doc(ipv6=True)), an IPv4 one of VIP's ``web``."""
        service, vip = ("web6", VIP6) if ":" in backend else ("web", VIP)
        state = BackendState.UP if up else BackendState.DOWN
        reason = ProbeResult.OK if up else ProbeResult.REFUSED
        entry = HealthEntry(
            address=backend,
            port=8080,
            check=CHECK,
            kind=CheckKind.TCP,
            state=state,
            reason=reason,
            consecutive=1,
            since=datetime.now(UTC),
            checker="tests",
        )
        await self.store.put(health_key(backend, 8080, CHECK), entry)
        cls = BackendUp if up else BackendDown
        meta = await self.bus.publish(
            cls(
                service=service,
                vip=vip,
                port=80,
                protocol="tcp",
                backend=Endpoint(address=backend, port=8080),
                check=CHECK,
                check_kind=CheckKind.TCP,
                previous_state=BackendState.DOWN if up else BackendState.UP,
                reason=reason,
                consecutive=1,
                checker="tests",
            )
        )
        return meta.id

    async def set_all(self, up: bool, backends: list[str] = BACKENDS) -> None:
        for b in backends:
            await self.set(b, up)


class RoutectlProc:
    """One ``vgw-routectl`` process for node ``n<i>``, its ExaBGP inside the node's namespace."""

    def __init__(self, lab: Lab, i: int, nats_url: str, rundir: Path, **settings: object) -> None:
        self.lab, self.i, self.node = lab, i, f"n{i}"
        self.log_path = rundir / f"routectl-{self.node}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "OTEL_"))}
        self.env.update(
            {
                "PYTHONPATH": str(REPO),
                "VGW_NATS_URL": nats_url,
                "VGW_NODE_ID": self.node,
                "VGW_INSTANCE_ID": f"routectl-{self.node}",
                "VGW_METRICS_ADDR": "127.0.0.1:0",
                "VGW_EXABGP_NETNS": lab.node_ns(i),
                "VGW_RUN_DIR": str(rundir / self.node),
                "VGW_HEALTH_BUCKET": f"vgw_health_{self.node}",
                "VGW_HOLD_DOWN_S": "0",
                "VGW_TICK_S": "0.1",
                "VGW_STARTUP_WAIT_S": "1",
                "OTEL_TRACES_EXPORTER": "none",
            }
        )
        self.env.update({f"VGW_{k.upper()}": str(v) for k, v in settings.items()})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RoutectlProc:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.routectl.main"],
            env=self.env,
            cwd=str(REPO),
            stdout=open(self.log_path, "ab"),  # noqa: SIM115 - lives as long as the process
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


async def until(pred: Callable[[], bool], timeout: float, step: float = 0.05, what: str = "") -> float:
    """Poll ``pred`` (in a thread: it may run birdc) until true; returns the seconds it took."""
    start = time.monotonic()
    while True:
        if await asyncio.to_thread(pred):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(step)


async def commit(store: ConfigStore, doc: ConfigDocument, reason: str = "test") -> int:
    res = await store.commit(doc, actor="tests", reason=reason)
    return res.revision


def metrics_of(proc: RoutectlProc) -> str:
    """The routectl process's /metrics text (its port is in its 'serving /metrics' log line)."""
    import json
    import urllib.request

    port = None
    for line in proc.log_path.read_text(errors="replace").splitlines():
        if '"metrics_port"' in line:
            try:
                port = json.loads(line)["metrics_port"]
            except (ValueError, KeyError):
                continue
    assert port is not None, "no metrics port in the routectl log"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())
