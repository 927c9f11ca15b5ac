"""One probe path (a VIP probe through the routed path or through one node) and its SLI window.

Probes start ``interval`` apart (start to start, with 10% jitter), not ``interval`` after the last
one ended: a failing probe that waits out its timeout does not stretch the period. A verdict still
needs ``fail_after`` failures in a row, each probe with its full timeout, but they are sent
``fast_s`` (``interval / 4``) apart while the path is *transitioning*: after a failure, and while a
probe is still unanswered ``fast_s`` after it was sent (a working path answers in milliseconds, a
blackhole only at the timeout) -- at most as many probes out as a verdict still needs.
:meth:`ProbePath.poke` asks for an early probe from outside: the monitor pokes a VIP's other paths
when one of them fails, so the evidence that another node still works (a success *sent after* the
failure was seen) comes within moments, not a whole interval later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
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


def utcnow() -> datetime:
    return datetime.now(UTC)


FAST_FRACTION = 0.25
"""While transitioning (or poked), probes start this fraction of the interval apart at the closest."""


class ProbePath:
    """Probes one path at the probe's interval and keeps the last ``window`` results.

    Times in the observation come from ``wallclock`` (the monitor's clock, so tests can skew it):
    ``failing_since`` is when the first failed probe of the run *ended*, ``last_ok_at`` and
    ``succeeding_since`` when the successful probe was *sent*. So "another path's last success is
    later than this path's failing_since" means that success was sent after this failure was seen
    (docs/monitor.md, the blame rule)."""

    def __init__(
        self,
        key: PathKey,
        probe: MonitorProbe,
        vantage: str,
        mark: int | None,
        netns: str | None,
        window: int,
        on_observation: Callable[[PathObservation], Awaitable[None]],
        *,
        fail_after: int = 3,
        wallclock: Callable[[], datetime] = utcnow,
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
        self._poked = asyncio.Event()
        self.fail_after = fail_after
        self.wallclock = wallclock
        self.fast_s = max(0.05, probe.interval * FAST_FRACTION)
        labels = (key.vip, str(key.port), key.path)
        self._success = SUCCESS.labels(*labels)
        self._latency = LATENCY.labels(*labels)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"probe {self.key}")

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def poke(self) -> None:
        """Probe again soon: as soon as ``fast_s`` has passed since this path's last probe began."""
        self._poked.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._prober.close()

    async def _run(self) -> None:
        await self._pause(time.monotonic(), random.uniform(0, self.probe.interval))
        inflight: deque[tuple[datetime, asyncio.Task[Outcome]]] = deque()
        try:
            while True:
                started = time.monotonic()
                self._poked.clear()  # a poke from before this probe is answered by it
                inflight.append((self.wallclock(), asyncio.create_task(self._prober.probe())))
                if await self._answers(inflight, started):
                    continue  # the earlier probe is still out: the next one starts now
                failures = self._consecutive_failures()
                transitioning = 0 < failures < self.fail_after
                gap = self.fast_s if transitioning else self.probe.interval * random.uniform(0.9, 1.1)
                await self._pause(started, gap)
        finally:
            for _, task in inflight:
                task.cancel()

    async def _answers(self, inflight: deque[tuple[datetime, asyncio.Task[Outcome]]], started: float) -> bool:
        """Record the probes' answers in the order they were sent. True when the next probe should
        start now instead: the one out is still unanswered ``fast_s`` after it began (a working path
        answers in milliseconds; a blackhole only at the timeout) and the probes out, if all failed,
        would not yet give a verdict. So the ``fail_after`` probes a verdict needs are sent
        ``fast_s`` apart, each waiting its full timeout, instead of one timeout after the other."""
        while inflight:
            sent_at, task = inflight[0]
            hedge = len(inflight) + self._consecutive_failures() < self.fail_after
            left = started + self.fast_s - time.monotonic()
            if hedge and left <= 0 and not task.done():
                return True
            await asyncio.wait({task}, timeout=left if hedge else None)
            if task.done():
                inflight.popleft()
                await self._recorded(sent_at, task.result())
        return False

    def _consecutive_failures(self) -> int:
        return next((i for i, r in enumerate(reversed(self._results)) if r.ok), len(self._results))

    async def _recorded(self, sent_at: datetime, outcome: Outcome) -> None:
        self._results.append(outcome)
        at = self.wallclock()
        log.debug("probe %s/%s sent %s: %s", self.key.vip, self.key.path, sent_at.time(), outcome.result.value)
        if outcome.ok:
            self._last_ok_at, self._failing_since = sent_at, None
            self._succeeding_since = self._succeeding_since or sent_at
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

    async def _pause(self, started: float, gap: float) -> None:
        """Until ``started + gap``, or ``started + fast_s`` once poked, whichever is first."""
        deadline = started + gap
        while (left := deadline - time.monotonic()) > 0:
            if self._poked.is_set():
                early = started + self.fast_s - time.monotonic()
                if early > 0:
                    await asyncio.sleep(min(early, left))
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), left)

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
            updated_at=self.wallclock(),
        )
