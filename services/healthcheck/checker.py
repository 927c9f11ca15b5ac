"""The healthcheck service: probes every (backend, check) it owns and publishes what changes.

- Targets come from config (:func:`vgw.config.health_targets`): one probe stream per backend
  address, port and check, shared by every service that uses it. Backends disabled in every
  service that lists them are not probed.
- Ownership: rendezvous hashing over live instances (:mod:`.membership`, :mod:`.sharding`).
- State is level: the ``vgw_health`` bucket is mirrored locally, so a target taken over from a dead
  instance (or after a restart) starts from its last known state, not from "unknown", and a
  takeover causes no transition.
- On a transition only: the bucket entry is written, a ``backend.up``/``backend.down`` event is
  published for each service using the backend (unless disabled there), in one span.
- Every long-running task (health mirror, config follower, scheduler, health writer, membership
  heartbeat and watch) runs under a :class:`vgw.supervise.Supervisor`: one that fails is logged,
  counted and restarted, and each rebuilds what it needs when it starts again (a watch starts from
  a new snapshot, the scheduler from the jobs, the writer retries every unstored entry).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
from opentelemetry import propagate, trace
from prometheus_client import Counter, Gauge

from vgw.bus import Bus
from vgw.config import ConfigDocument, HealthCheck, HealthTarget, health_targets
from vgw.events import BackendDown, BackendState, BackendUp, CheckKind, Endpoint, ProbeResult
from vgw.health import HEALTH_BUCKET, HealthEntry
from vgw.probe_specs import from_health_check
from vgw.probes import Outcome, Prober, Target
from vgw.store import Change, KvStore, Snapshot
from vgw.supervise import Supervisor

from .membership import Membership
from .scheduler import Job, Scheduler, Timing
from .sharding import owned
from .state import CheckState, Transition

log = logging.getLogger("vgw.healthcheck")
tracer = trace.get_tracer("vgw.healthcheck")

TRANSITIONS = Counter("vgw_healthcheck_transitions_total", "Backend state transitions", ["state", "reason"])
OWNED = Gauge("vgw_healthcheck_owned_targets", "Probe streams this instance runs")
TARGETS = Gauge("vgw_healthcheck_targets", "Probe streams the configuration asks for (all instances)")
BY_STATE = Gauge("vgw_healthcheck_backends", "Probe streams owned here, by state", ["state"])
MEMBERS = Gauge("vgw_healthcheck_members", "Live healthcheck instances")
CONFIG_REVISION = Gauge("vgw_healthcheck_config_revision", "Config revision in use")

ConfigFeed = Callable[[], AsyncIterator[tuple[int, ConfigDocument]]]
NATS_TROUBLE = (nats.errors.Error, TimeoutError, OSError)
"""What a write to a bucket raises while NATS is away or electing: expected, handled by retrying.
Anything else is a bug or bad data, and fails the task for its supervisor to count and restart."""


@dataclass(frozen=True)
class _JobShape:
    """What makes a job different enough to rebuild its prober."""

    check: HealthCheck
    address: str
    port: int


def _freeze_long_lived() -> None:
    """Put what a config revision built (documents, targets, jobs: hundreds of thousands of objects
    at 10,000 backends) out of the cyclic collector's sight. Otherwise each full collection walks
    all of it: measured ~270 ms on the benchmark machine, every few seconds at 10,000 probes/s,
    which was both CPU and the tail of the scheduling lateness. The previous revision's objects are
    unfrozen and collected first, so garbage in reference cycles is not kept. Refcounting still frees
    frozen objects that die."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _traceparent() -> str | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


class HealthChecker:
    def __init__(self, bus: Bus, instance: str, config_feed: ConfigFeed, *, heartbeat_s: float = 1.0,
                 members_bucket: str = "vgw_hc_members", netns: str | None = None,
                 supervisor: Supervisor | None = None) -> None:  # fmt: skip
        self.bus = bus
        # The service passes its runtime's supervisor (restarts show in /readyz); tests and the
        # benchmark, which run the checker without a runtime, get one of its own.
        self.supervisor = supervisor if supervisor is not None else Supervisor("healthcheck")
        self.instance = instance
        self._netns = netns
        self._heartbeat_s = heartbeat_s
        self._settle_until = 0.0
        self._config_feed = config_feed
        self._targets: dict[str, HealthTarget] = {}
        self._shapes: dict[str, _JobShape] = {}
        self._known: dict[str, HealthEntry] = {}
        self._unstored: dict[str, HealthEntry] = {}
        self._dirty = asyncio.Event()
        self._health: KvStore[HealthEntry] | None = None
        self.revision: int | None = None
        self.scheduler = Scheduler(self._on_result)
        self.membership = Membership(
            bus, instance, members_bucket, heartbeat_s, lambda _live: self._rebalance(), supervisor=self.supervisor
        )
        self._mirror_ready = asyncio.Event()
        self._spawned: list[str] = []
        for state in BackendState:
            BY_STATE.labels(state.value).set_function(functools.partial(self._count, state))

    @property
    def unstored(self) -> int:
        """Transitions whose state is not in the bucket yet."""
        return len(self._unstored)

    def _count(self, state: BackendState) -> int:
        return sum(1 for j in self.scheduler.jobs.values() if j.state.state is state)

    async def start(self) -> None:
        self._health = await KvStore.open(self.bus, HEALTH_BUCKET, HealthEntry)
        self._spawn("health-mirror", self._mirror_health)
        await asyncio.wait_for(self._mirror_ready.wait(), 30)
        await self.membership.start()
        # Instances started together have not heard each other yet: give the heartbeats a moment, or
        # each would probe everything once and publish the same first transitions.
        self._settle_until = time.monotonic() + 1.5 * self._heartbeat_s
        self._spawn("scheduler", self.scheduler.run)
        self._spawn("config", self._follow_config)
        self._spawn("health-writer", self._writer)

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        self.supervisor.spawn(name, factory)
        self._spawned.append(name)

    async def stop(self) -> None:
        await self.membership.stop()
        if self._spawned:  # only what a (maybe failed) start got to
            await self.supervisor.stop(*self._spawned)
        await self.scheduler.close()

    async def _writer(self) -> None:
        """The one writer of ``vgw_health`` for this instance. Transitions only mark their key
        (newest state wins), so a burst of thousands costs one put per key, a few at a time; what
        fails (NATS away) stays marked and is retried a second later. Level state must not stay
        wrong because NATS was away at the moment of a transition."""
        assert self._health is not None
        health = self._health
        self._dirty.set()  # (re)started: whatever is unstored is due, including a failed run's batch
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            batch = list(self._unstored.items())

            async def put(key: str, entry: HealthEntry) -> bool:
                try:
                    await health.put(key, entry)
                except NATS_TROUBLE as exc:
                    log.warning("could not store health of %s (will retry): %s", key, exc)
                    return False
                if self._unstored.get(key) is entry:
                    del self._unstored[key]
                return True

            for i in range(0, len(batch), 64):
                results = await asyncio.gather(*(put(k, e) for k, e in batch[i : i + 64]))
                if not all(results):
                    await asyncio.sleep(1.0)  # NATS trouble: back off, then retry what is left
                    self._dirty.set()
                    break

    async def _mirror_health(self) -> None:
        assert self._health is not None
        async for ev in self._health.watch():
            if isinstance(ev, Snapshot):
                self._known = {k: e.value for k, e in ev.entries.items()}
                self._mirror_ready.set()
            elif isinstance(ev, Change):
                if ev.entry is None:
                    self._known.pop(ev.key, None)
                else:
                    self._known[ev.key] = ev.entry.value

    async def _follow_config(self) -> None:
        async for revision, doc in self._config_feed():
            await asyncio.sleep(max(0.0, self._settle_until - time.monotonic()))
            self._targets = {k: t for k, t in health_targets(doc).items() if t.active}
            self.revision = revision
            CONFIG_REVISION.set(revision)
            TARGETS.set(len(self._targets))
            log.info("config revision %d: %d probe streams", revision, len(self._targets))
            self._rebalance()
            _freeze_long_lived()

    def _rebalance(self) -> None:
        MEMBERS.set(len(self.membership.live))
        mine = owned(self._targets, self.membership.live, self.instance)
        for key in list(self.scheduler.jobs):
            if key not in mine:
                self.scheduler.remove(key)
                self._shapes.pop(key, None)
        for key in mine:
            target = self._targets[key]
            shape = _JobShape(target.check, str(target.address), target.port)
            job = self.scheduler.jobs.get(key)
            if job is not None and self._shapes.get(key) == shape:
                continue
            state = job.state if job is not None else self._initial_state(key, target.check)
            state.rise, state.fall = target.check.rise, target.check.fall
            check = target.check
            if check.kind == "grpc" and self._netns:
                log.warning("gRPC check %s probes from this process's namespace: grpcio opens its own sockets,"
                            " so VGW_HC_NETNS does not apply to it", check.name)  # fmt: skip
            self.scheduler.add(
                Job(
                    key=key,
                    kind=check.kind,
                    prober=Prober(
                        Target(str(target.address), target.port, None, self._netns), from_health_check(check)
                    ),
                    timing=Timing(check.interval, check.fast_interval or max(check.interval / 4, 0.1), check.jitter),
                    state=state,
                )
            )
            self._shapes[key] = shape
        OWNED.set(len(self.scheduler.jobs))

    def _initial_state(self, key: str, check: HealthCheck) -> CheckState:
        """Start from the last known state (a takeover or restart is not a transition)."""
        known = self._known.get(key)
        if known is not None and known.check == check.name:
            s = CheckState(check.rise, check.fall, known.state)
            if known.state is BackendState.UP:
                s.successes = check.rise
            elif known.state is BackendState.DOWN:
                s.failures = check.fall
            return s
        return CheckState(check.rise, check.fall, BackendState(check.initial_state))

    async def _on_result(self, job: Job, outcome: Outcome, transition: Transition | None) -> None:
        if transition is None:
            return
        target = self._targets.get(job.key)
        if target is None:
            return
        state = transition.current
        TRANSITIONS.labels(state.value, outcome.result.value).inc()
        with tracer.start_as_current_span(
            "healthcheck transition",
            attributes={
                "vgw.backend": f"{target.address}:{target.port}",
                "vgw.check": target.check.name,
                "vgw.state": state.value,
                "vgw.reason": outcome.result.value,
            },
        ):
            log.info(
                "%s:%d %s is %s (%s: %s)",
                target.address, target.port, target.check.name, state.value, outcome.result.value, outcome.detail,
                extra={"backend": f"{target.address}:{target.port}", "check": target.check.name, "state": state.value},
            )  # fmt: skip
            entry = HealthEntry(
                address=target.address,
                port=target.port,
                check=target.check.name,
                kind=CheckKind(target.check.kind),
                state=state,
                reason=outcome.result,
                detail=outcome.detail[:1024],
                last_latency_ms=outcome.latency_ms,
                consecutive=transition.consecutive,
                since=datetime.now(UTC),
                checker=self.instance,
                traceparent=_traceparent(),
            )
            self._known[job.key] = entry
            self._unstored[job.key] = entry
            self._dirty.set()
            event_cls = BackendUp if state is BackendState.UP else BackendDown
            for user in target.users:
                if user.backend.state == "disabled":
                    continue
                await self.bus.publish(
                    event_cls(
                        service=user.service,
                        vip=user.vip,
                        port=user.port,
                        protocol=user.protocol,
                        backend=Endpoint(address=user.backend.address, port=user.backend.port),
                        check=target.check.name,
                        check_kind=CheckKind(target.check.kind),
                        previous_state=transition.previous,
                        reason=outcome.result if state is BackendState.DOWN else ProbeResult.OK,
                        detail=outcome.detail[:1024],
                        last_latency_ms=outcome.latency_ms,
                        consecutive=transition.consecutive,
                        checker=self.instance,
                    )
                )
