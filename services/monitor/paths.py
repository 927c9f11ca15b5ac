"""One probe path (a VIP probe through the routed path or through one node) and its SLI window."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge, Histogram

from vgw.config import MonitorProbe
from vgw.events import ProbeResult
from vgw.monitoring import PathObservation
from vgw.probe_specs import from_monitor_probe
from vgw.probes import Outcome, Prober, Target

log = logging.getLogger("vgw.monitor")

PROBES = PromCounter(
    "vgw_monitor_probes_total", "VIP probes, by path (routed or node)", ["vip", "port", "path", "result"]
)
LATENCY = Histogram(
    "vgw_monitor_probe_duration_seconds",
    "Latency of successful VIP probes",
    ["vip", "port", "path"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SUCCESS = Gauge("vgw_monitor_success_ratio", "Share of successful probes in the SLI window", ["vip", "port", "path"])


@dataclass(frozen=True)
class PathKey:
    vip: str
    port: int
    probe: str
    path: str


class ProbePath:
    """Probes one path at the probe's interval and keeps the last ``window`` results."""

    def __init__(
        self,
        key: PathKey,
        probe: MonitorProbe,
        vantage: str,
        mark: int | None,
        netns: str | None,
        window: int,
        on_observation: Callable[[PathObservation], Awaitable[None]],
    ) -> None:
        self.key = key
        self.probe = probe
        self.vantage = vantage
        self._prober = Prober(Target(key.vip, key.port, mark, netns), from_monitor_probe(probe))
        self._results: deque[Outcome] = deque(maxlen=window)
        self._failing_since: datetime | None = None
        self._succeeding_since: datetime | None = None
        self._last_ok_at: datetime | None = None
        self._on_observation = on_observation
        self._task: asyncio.Task[None] | None = None
        labels = (key.vip, str(key.port), key.path)
        self._success = SUCCESS.labels(*labels)
        self._latency = LATENCY.labels(*labels)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._prober.close()

    async def _run(self) -> None:
        await asyncio.sleep(random.uniform(0, self.probe.interval))
        while True:
            outcome = await self._prober.probe()
            self._results.append(outcome)
            at = datetime.now(UTC)
            if outcome.ok:
                self._last_ok_at, self._failing_since = at, None
                self._succeeding_since = self._succeeding_since or at
            else:
                self._failing_since = self._failing_since or at
                self._succeeding_since = None
            PROBES.labels(self.key.vip, str(self.key.port), self.key.path, outcome.result.value).inc()
            if outcome.ok and outcome.latency_ms is not None:
                self._latency.observe(outcome.latency_ms / 1000)
            obs = self.observation()
            self._success.set(obs.successes / obs.window if obs.window else 0)
            try:
                await self._on_observation(obs)
            except Exception as exc:  # NATS away: keep probing, metrics still tell
                log.warning("could not record observation %s: %s", self.key, exc)
            await asyncio.sleep(self.probe.interval * random.uniform(0.9, 1.1))

    def observation(self) -> PathObservation:
        results = list(self._results)
        ok = [r.ok for r in results]
        consec_fail = next((i for i, x in enumerate(reversed(ok)) if x), len(ok))
        consec_ok = next((i for i, x in enumerate(reversed(ok)) if not x), len(ok))
        lat = sorted(r.latency_ms for r in results if r.ok and r.latency_ms is not None)
        last = results[-1] if results else Outcome(ProbeResult.ERROR, "no probe yet")
        return PathObservation(
            vantage=self.vantage,
            vip=self.key.vip,
            port=self.key.port,
            protocol=self.probe.protocol,
            probe=self.key.probe,
            path=self.key.path,
            interval_s=self.probe.interval,
            window=len(results),
            successes=sum(ok),
            consecutive_failures=consec_fail,
            consecutive_successes=consec_ok,
            failing_since=self._failing_since,
            last_ok_at=self._last_ok_at,
            succeeding_since=self._succeeding_since,
            errors=dict(Counter(r.result.value for r in results if not r.ok)),
            last_result=last.result,
            last_detail=last.detail[:256],
            p50_ms=lat[len(lat) // 2] if lat else None,
            p99_ms=lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
            updated_at=datetime.now(UTC),
        )
