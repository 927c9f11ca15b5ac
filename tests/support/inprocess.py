"""Run a service's app in the test's own process, on the real runtime pieces (a real Bus to a real
nats-server, Health, a Supervisor): for tests that reach into a running service, e.g. to inject a
fault into one of its tasks. Everything a process-level test would see is there except the HTTP
endpoint and the signal handling, which tests of the runtime itself cover."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from prometheus_client import REGISTRY

from vgw.bus import Bus
from vgw.runtime import Runtime, ServiceApp
from vgw.settings import VgwSettings
from vgw.supervise import Supervisor
from vgw.telemetry.endpoint import Health

S = TypeVar("S", bound=VgwSettings)


@asynccontextmanager
async def running(name: str, app: ServiceApp[S], settings: S, *, backoff_s: float = 0.2) -> AsyncIterator[Runtime[S]]:
    """``app`` started on a runtime (its supervisor restarts a failed task after ``backoff_s``,
    doubling); stopped the way the runner stops it on SIGTERM when the block ends."""
    health = Health()
    stopping = asyncio.Event()
    bus = Bus(settings.nats_options(), source=f"/vgw/{name}/test", identity=settings.nats_identity)
    await bus.connect()
    supervisor = Supervisor(name, health, backoff_initial_s=backoff_s, backoff_max_s=backoff_s * 4)
    rt = Runtime(name=name, settings=settings, bus=bus, health=health, stopping=stopping, supervisor=supervisor)
    try:
        await bus.ensure_event_stream(settings.event_stream_max_age_s, settings.event_stream_max_bytes)
        await app.start(rt)
        health.set_started()
        yield rt
    finally:
        health.set_stopping()
        try:
            await app.stop()
            await supervisor.stop()
        finally:
            await bus.close()


async def fails_then_recovers(
    rt: Runtime[Any],
    task: str,
    fault: Fault,
    before: float,
    *,
    required: bool = True,
    then_ready: bool = True,
    timeout_s: float = 20.0,
) -> None:
    """With ``fault`` armed (``before``: the task's restarts counted before arming): the task fails on
    every start and readiness names it (when required; an optional task leaves readiness alone).
    Then disarmed: it runs again, its restarts counted, and (``then_ready``) the service is ready again."""
    await _until(lambda: fault.hits >= 2, timeout_s, f"{task} failing on restart")
    await _until(lambda: not rt.supervisor.is_up(task), timeout_s, f"{task} seen down")
    ready, report = rt.health.readiness()
    if required:
        assert not ready and task in report["tasks"], report
    else:
        assert task not in report.get("tasks", ""), report
    fault.armed = False
    await _until(lambda: rt.supervisor.is_up(task), timeout_s, f"{task} restarted")
    assert task_restarts(rt.name, task) >= before + 2
    if then_ready:
        await _until(lambda: rt.health.readiness()[0], timeout_s, "ready again")


async def _until(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not pred():
        assert loop.time() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.005)


def task_restarts(service: str, task: str) -> float:
    """``vgw_task_restarts_total{service,task}`` of this process."""
    return REGISTRY.get_sample_value("vgw_task_restarts_total", {"service": service, "task": task}) or 0.0


class Fault:
    """Wraps a callable so that, while armed, calling it raises ``InjectedFaultError``; counts the
    hits (calls that raised) and the calls that went through.

    Armed until disarmed, so a test can see the task down (failing on each restart) before letting it
    recover -- no race with a single short backoff."""

    def __init__(self, target: Callable[..., Any]) -> None:
        self.target = target
        self.armed = False
        self.hits = 0
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.armed:
            self.hits += 1
            raise InjectedFaultError(f"injected fault #{self.hits}")
        self.calls += 1
        return self.target(*args, **kwargs)


class InjectedFaultError(RuntimeError):
    pass
