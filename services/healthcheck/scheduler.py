"""The probe scheduler: one timer heap for every (backend, check) this instance owns.

A single loop sleeps until the earliest due probe, so 10,000 backends cost one timer, not 10,000
sleeping tasks. Each next probe is planned from the previous *planned* time (no drift), spread by
jitter, at the fast interval while a backend is transitioning; lateness (start - plan) is measured.
A probe still running when its next turn comes is not doubled: that turn is skipped and counted.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Histogram

from vgw.events import ProbeResult
from vgw.probes import Outcome, Prober

from .state import CheckState, Transition

log = logging.getLogger("vgw.healthcheck.scheduler")

PROBES = Counter("vgw_healthcheck_probes_total", "Probes run, by check kind and result", ["kind", "result"])
PROBE_SECONDS = Histogram(
    "vgw_healthcheck_probe_duration_seconds",
    "Probe latency (connect / response), successful probes",
    ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LATENESS = Histogram(
    "vgw_healthcheck_schedule_lateness_seconds",
    "How late probes start compared with their plan",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
_BATCH = 256  # probes started per loop turn before completions get their turn
OVERRUNS = Counter("vgw_healthcheck_overruns_total", "Probe turns skipped because the previous probe still ran")


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
    lateness: list[float] = field(default_factory=list)


ResultHandler = Callable[[Job, Outcome, Transition | None], Awaitable[None]]
"""Called for transitions only (one task each), after the next probe is already planned."""


class Scheduler:
    def __init__(self, on_result: ResultHandler, *, record_lateness: bool = False) -> None:
        self._on_result = on_result
        self._jobs: dict[str, Job] = {}
        self._heap: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._record = record_lateness
        self.lateness_samples: list[float] = []
        self._on_every_result = False
        self._counters: dict[tuple[str, ProbeResult], Any] = {}
        self._latency: dict[str, Any] = {}
        self._lateness_hist = LATENESS

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
        self._jobs[job.key] = job
        self._push(job)

    def remove(self, key: str) -> Job | None:
        job = self._jobs.pop(key, None)
        if job is not None:
            self._retire(job)
        return job

    def _retire(self, job: Job) -> None:
        job.removed = True
        task = asyncio.ensure_future(job.prober.close())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _push(self, job: Job) -> None:
        entry = (job.planned, next(self._seq), job)
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:  # only an earlier deadline needs the loop to wake up
            self._wake.set()

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            started = 0
            while self._heap and self._heap[0][0] <= now and started < _BATCH:
                planned, _, job = heapq.heappop(self._heap)
                if job.removed or planned != job.planned:
                    continue  # stale heap entry
                if job.running:
                    OVERRUNS.inc()
                    self._plan_next(job, now)
                    continue
                job.running = True
                started += 1
                late = max(0.0, now - planned)
                self._late(late)
                if job.prober.callback_driven:
                    job.prober.start(functools.partial(self._done, job))
                else:
                    self._spawn(self._probe(job))
            if started >= _BATCH:
                await asyncio.sleep(0)  # let completions run between batches: fairer lateness
                continue
            self._wake.clear()
            timeout = self._heap[0][0] - time.monotonic() if self._heap else None
            if timeout is None or timeout > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass

    def _late(self, late: float) -> None:
        self._lateness_hist.observe(late)
        if self._record:
            self.lateness_samples.append(late)

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
        counter = self._counters.get((job.kind, outcome.result))
        if counter is None:
            counter = self._counters[(job.kind, outcome.result)] = PROBES.labels(job.kind, outcome.result.value)
        counter.inc()
        if outcome.ok and outcome.latency_ms is not None:
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
        step = base * (1 + t.jitter * random.uniform(-1, 1))
        # From the plan, not from now, so intervals do not drift; after a stall, do not burst.
        job.planned = max(job.planned + step, now)
        self._push(job)

    async def close(self) -> None:
        for key in list(self._jobs):
            self.remove(key)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
