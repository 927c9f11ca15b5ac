"""The probe scheduler: one timing queue for every (backend, check) this instance owns.

Probes are planned on a grid of ``TICK_S`` (5 ms): the queue holds one bucket (a list of jobs) per
tick that has probes due, and a single loop sleeps until the earliest such tick, so 10,000
backends cost one timer and a list append per probe, not a sleeping task or a heap entry each.
A probe starts at the first tick at or after its plan: at most one tick late by design, which the
lateness metric includes. Each next probe is planned from the previous *planned* time (no drift),
spread by jitter, at the fast interval while a backend is transitioning; lateness (start - plan) is
measured. A probe still running when its next turn comes is not doubled: that turn is skipped and
counted.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from vgw.events import ProbeResult
from vgw.probes import Done, Outcome, Prober

from .hotmetrics import HotHistogram, HotHistogramChild
from .state import CheckState, Transition

log = logging.getLogger("vgw.healthcheck.scheduler")

PROBES = Counter("vgw_healthcheck_probes_total", "Probes run, by check kind and result", ["kind", "result"])
PROBE_SECONDS = HotHistogram(
    "vgw_healthcheck_probe_duration_seconds",
    "Probe latency (connect / response), successful probes",
    ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LATENESS = HotHistogram(
    "vgw_healthcheck_schedule_lateness_seconds",
    "How late probes start compared with their plan",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
OVERRUNS = Counter("vgw_healthcheck_overruns_total", "Probe turns skipped because the previous probe still ran")
TICK_S = 0.005
"""Planning grid: coarse enough that one wake-up starts tens of probes at 10,000 a second, fine
enough to be small against any interval (fast intervals are >= 0.1 s)."""
_BATCH = 256  # probes started per loop turn before completions get their turn


@dataclass
class Timing:
    interval_s: float
    fast_interval_s: float
    jitter: float


@dataclass(eq=False)
class Job:
    key: str
    kind: str
    prober: Prober
    timing: Timing
    state: CheckState
    planned: float = 0.0
    running: bool = False
    removed: bool = False
    tick: int = 0
    """The tick whose bucket holds this job's next turn (0: in none); entries elsewhere are stale."""
    on_outcome: Done | None = field(default=None, repr=False)
    """Made once per job, not once per probe: the callback a callback-driven probe reports to."""


ResultHandler = Callable[[Job, Outcome, Transition | None], Awaitable[None]]
"""Called for transitions only (one task each), after the next probe is already planned."""


class Scheduler:
    def __init__(self, on_result: ResultHandler, *, record_lateness: bool = False) -> None:
        self._on_result = on_result
        self._jobs: dict[str, Job] = {}
        self._buckets: dict[int, list[Job]] = {}
        self._ticks: list[int] = []  # heap of the ticks that have a bucket
        self._per_tick = 1.0 / TICK_S
        self._waiter: asyncio.Future[None] | None = None
        self._waiting_for = 0  # the tick the loop sleeps until (0: none, it waits for work)
        self._tasks: set[asyncio.Task[None]] = set()
        self.record_lateness = record_lateness
        self.lateness_samples: list[float] = []
        self._on_every_result = False
        # Probe counts are summed here and added to the Prometheus counters once per loop turn:
        # Counter.inc takes a lock, too dear to pay per probe at 10,000 a second.
        self._counts: dict[tuple[str, ProbeResult], int] = {}
        self._counters: dict[tuple[str, ProbeResult], Any] = {}
        self._latency: dict[str, HotHistogramChild] = {}
        self._lateness = LATENESS.labels()

    @property
    def jobs(self) -> dict[str, Job]:
        return self._jobs

    def add(self, job: Job, first_in_s: float | None = None) -> None:
        """Start probing ``job``; the first probe is spread over one interval unless given."""
        old = self._jobs.pop(job.key, None)
        if old is not None:
            self._retire(old)
        delay = random.uniform(0, job.timing.interval_s) if first_in_s is None else first_in_s
        job.planned = time.monotonic() + delay
        if job.prober.callback_driven:
            job.on_outcome = functools.partial(self._done, job)
        self._jobs[job.key] = job
        self._push(job)

    def remove(self, key: str) -> Job | None:
        job = self._jobs.pop(key, None)
        if job is not None:
            self._retire(job)
        return job

    def _retire(self, job: Job) -> None:
        job.removed = True
        if job.prober.holds_resources:
            task = asyncio.ensure_future(job.prober.close())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _push(self, job: Job) -> None:
        # The first tick at or after the plan: a probe never starts before its time.
        tick = int(job.planned * self._per_tick) + 1
        job.tick = tick
        bucket = self._buckets.get(tick)
        if bucket is not None:
            bucket.append(job)
            return
        self._buckets[tick] = [job]
        heapq.heappush(self._ticks, tick)
        # Only a tick earlier than the one the loop sleeps until needs to wake it.
        if self._waiter is not None and (self._waiting_for == 0 or tick < self._waiting_for):
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def run(self) -> None:
        """The scheduling loop (supervised: after a failure it starts again from the jobs)."""
        loop = asyncio.get_running_loop()
        self._requeue()
        while True:
            now = time.monotonic()
            started = self._start_due(now)
            self._flush_counts()
            if started >= _BATCH:
                await asyncio.sleep(0)  # let completions run between batches: fairer lateness
                continue
            self._waiter = loop.create_future()
            self._waiting_for = self._ticks[0] if self._ticks else 0
            timer = None
            if self._waiting_for:
                # call_later from our own clock, not call_at: the loop's clock need not be time.monotonic
                timer = loop.call_later(max(0.0, self._waiting_for * TICK_S - time.monotonic()), self._wake)
            try:
                await self._waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    def _requeue(self) -> None:
        """Rebuild the queue from the jobs: what a failed run had taken out of it is not lost. A job
        whose probe is running is planned again when it reports."""
        self._buckets.clear()
        self._ticks.clear()
        for job in self._jobs.values():
            if not job.running:
                self._push(job)

    def _start_due(self, now: float) -> int:
        """Start the probes of every tick that has come, up to ``_BATCH``; return how many started."""
        current = int(now * self._per_tick)
        started = 0
        heap, buckets = self._ticks, self._buckets
        while heap and heap[0] <= current and started < _BATCH:
            tick = heap[0]
            bucket = buckets[tick]
            budget = _BATCH - started
            if len(bucket) > budget:
                chunk = bucket[:budget]
                del bucket[:budget]
            else:
                chunk = bucket
                del buckets[tick]
                heapq.heappop(heap)
            for job in chunk:
                if job.tick != tick or job.removed:
                    continue  # stale entry: re-planned or removed since
                job.tick = 0
                if job.running:
                    OVERRUNS.inc()
                    self._plan_next(job, now)
                    continue
                started += 1
                late = now - job.planned
                late = max(late, 0.0)
                self._lateness.observe(late)
                if self.record_lateness:
                    self.lateness_samples.append(late)
                if job.on_outcome is not None:
                    job.prober.start(job.on_outcome)  # reports from a later loop turn, never from here
                else:
                    self._spawn(self._probe(job))
                job.running = True  # after the start: one that raised leaves the job to _requeue
        return started

    def _flush_counts(self) -> None:
        if not self._counts:
            return
        counts, self._counts = self._counts, {}
        for key, n in counts.items():
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = PROBES.labels(key[0], key[1].value)
            counter.inc(n)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe(self, job: Job) -> None:
        try:
            outcome = await job.prober.probe()
        except BaseException:
            job.running = False
            raise
        self._done(job, outcome)

    def _done(self, job: Job, outcome: Outcome) -> None:
        """Account for one outcome; only a transition costs a task (to store and publish it)."""
        job.running = False
        key = (job.kind, outcome.result)
        self._counts[key] = self._counts.get(key, 0) + 1
        if outcome.latency_ms is not None and outcome.result is ProbeResult.OK:
            hist = self._latency.get(job.kind)
            if hist is None:
                hist = self._latency[job.kind] = PROBE_SECONDS.labels(job.kind)
            hist.observe(outcome.latency_ms / 1000)
        if job.removed:
            return
        transition = job.state.observe(outcome)
        self._plan_next(job, time.monotonic())
        if transition is not None or self._on_every_result:
            self._spawn(self._report(job, outcome, transition))

    async def _report(self, job: Job, outcome: Outcome, transition: Transition | None) -> None:
        try:
            await self._on_result(job, outcome, transition)
        except Exception:
            log.exception("handling the result of %s failed", job.key)

    def _plan_next(self, job: Job, now: float) -> None:
        t = job.timing
        base = t.fast_interval_s if job.state.transitioning else t.interval_s
        step = base * (1 + t.jitter * (2 * random.random() - 1))
        # From the plan, not from now, so intervals do not drift; after a stall, do not burst.
        planned = job.planned + step
        job.planned = planned if planned > now else now
        self._push(job)

    async def close(self) -> None:
        for key in list(self._jobs):
            self.remove(key)
        self._flush_counts()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
