"""In-process monitors for the leadership and supervision tests: the real MonitorApp on a real
nats-server, probing from an empty network namespace (its own probes fail at once and blame no one:
a blind vantage point), while a scripted vantage point writes the observations that matter."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from typing import Any

from services.monitor.app import MonitorSettings
from tests.routectl.harness import make_doc
from vgw.bus import Bus
from vgw.config import ConfigDocument
from vgw.events import ProbeResult
from vgw.monitoring import OBS_BUCKET, ROUTED, PathObservation, obs_key
from vgw.store import KvStore

VIP_A = "203.0.113.10"
VIP_B = "203.0.113.11"
INTERVAL_S = 0.5


def two_vip_doc() -> ConfigDocument:
    """Two VIPs on n1 and n2, each with a per-node HTTP probe."""
    raw = make_doc(2).model_dump(mode="json")
    second = dict(raw["vips"][0], address=VIP_B)
    second["services"] = [dict(svc, name=f"{svc['name']}-b") for svc in second["services"]]
    raw["vips"].append(second)
    for vip in raw["vips"]:
        vip["monitor"] = [{"kind": "http", "port": 80, "interval": INTERVAL_S, "timeout": 0.3, "per_node": True}]
    return ConfigDocument.model_validate(raw)


@contextlib.contextmanager
def empty_netns() -> Iterator[str]:
    """A network namespace with nothing in it: probes from there fail at once, off the network."""
    name = f"vme{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def settings(url: str, instance: str, netns: str, **extra: Any) -> MonitorSettings:
    base: dict[str, Any] = {
        "nats_url": url,
        "instance_id": instance,
        "monitor_steer": False,
        "monitor_netns": netns,
        "monitor_fail_after": 2,
        "monitor_judge_interval_s": 0.1,
        "monitor_lease_s": 2.0,
        "monitor_request_ttl_s": 6.0,
        "monitor_hold_down_s": 3.0,
        "monitor_max_withdrawals_per_min": 1,
        "nats_reconnect_wait_s": 0.2,
    }
    return MonitorSettings(**{**base, **extra})


class FakeVantage:
    """Vantage point ``vpx``: writes, every 0.2 s, an observation for each VIP's routed path and its
    path through n1 and n2, each working or failing as the test says."""

    def __init__(self, bus: Bus, vantage: str = "vpx") -> None:
        self.bus = bus
        self.vantage = vantage
        self.failing: set[tuple[str, str]] = set()
        """(vip, path) that fail; everything else works."""
        self._since: dict[tuple[str, str, bool], datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self.writes = 0

    def observation(self, vip: str, path: str, now: datetime) -> PathObservation:
        bad = (vip, path) in self.failing
        state = (vip, path, bad)
        since = self._since.setdefault(state, now)
        for other in (True, False):
            if other != bad:
                self._since.pop((vip, path, other), None)
        return PathObservation(
            vantage=self.vantage, vip=ip_address(vip), port=80, protocol="tcp", probe="http-80", path=path,
            interval_s=INTERVAL_S, window=5, successes=0 if bad else 5, consecutive_failures=5 if bad else 0,
            consecutive_successes=0 if bad else 5, errors={"timeout": 5} if bad else {},
            last_result=ProbeResult.TIMEOUT if bad else ProbeResult.OK,
            failing_since=since if bad else None, last_ok_at=None if bad else now,
            succeeding_since=None if bad else since, updated_at=now,
        )  # fmt: skip

    async def write_once(self, store: KvStore[PathObservation]) -> None:
        now = datetime.now(UTC)
        for vip in (VIP_A, VIP_B):
            for path in (ROUTED, "n1", "n2"):
                o = self.observation(vip, path, now - timedelta(milliseconds=1))
                await store.put(obs_key(o.vip, o.port, o.path, o.vantage), o)
        self.writes += 1

    async def _run(self, stop: asyncio.Event) -> None:
        store = await KvStore.attach(self.bus, OBS_BUCKET, PathObservation, writer="vgw-monitor")
        while not stop.is_set():
            await self.write_once(store)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeVantage]:
        # Stopped by a flag, not a cancel: on Python 3.11 a cancel that races a completing wait_for
        # inside a NATS request can be swallowed, and the writer then never ended (a CI run hung here).
        stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(stop))
        try:
            yield self
        finally:
            stop.set()
            await asyncio.wait_for(self._task, 10)
