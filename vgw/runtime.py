"""The service runner every VGW process uses.

Start-up: settings (exit 2 when bad), JSON logs, tracing, the /metrics + /healthz + /readyz endpoint,
NATS (retried with progress until it answers), the event stream, then the service's own ``start``.
Readiness is true once started and while NATS is connected.

Shutdown on SIGTERM or SIGINT, in order: not ready -> the service stops its intake (``stop``) ->
NATS drained (pending messages handled, publishes flushed) -> telemetry flushed -> exit 0. A second
signal, or a shutdown slower than ``VGW_SHUTDOWN_TIMEOUT_S``, exits at once with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from vgw.bus import Bus
from vgw.logs import setup_logging
from vgw.settings import VgwSettings, load_settings
from vgw.supervise import Supervisor
from vgw.telemetry.endpoint import Health, MetricsEndpoint
from vgw.telemetry.tracing import setup_tracing, shutdown_tracing

log = logging.getLogger("vgw.runtime")

S = TypeVar("S", bound=VgwSettings)


@dataclass
class Runtime(Generic[S]):
    """What a service gets from the runner."""

    name: str
    settings: S
    bus: Bus
    health: Health
    stopping: asyncio.Event
    supervisor: Supervisor
    """Runs the service's long-running tasks (restarts them on failure, reports them to /readyz)."""


class ServiceApp(Protocol[S]):
    async def start(self, rt: Runtime[S]) -> None:
        """Subscribe, start tasks; return once the service does its job (it is then ready)."""

    async def stop(self) -> None:
        """Stop taking new work; finish or abandon what is in flight quickly."""


def run(name: str, app_factory: Callable[[S], ServiceApp[S]], settings_cls: type[S]) -> None:
    """Run a service until SIGTERM/SIGINT; never returns."""
    settings = load_settings(settings_cls)
    setup_logging(name, settings.log_level, settings.instance_id)
    _raise_fd_limit()
    setup_tracing(name, settings.instance_id)
    try:
        code = asyncio.run(_serve(name, app_factory, settings))
    except KeyboardInterrupt:
        code = 1
    sys.exit(code)


def _raise_fd_limit() -> None:
    """Services hold a socket per probe, peer and subscription: the default soft limit of 1024 open
    files is far below what a health checker of thousands of backends needs. Use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve(name: str, app_factory: Callable[[S], ServiceApp[S]], settings: S) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.error("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s received: shutting down", signal.Signals(signum).name)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    health = Health()
    endpoint = MetricsEndpoint(settings.metrics_addr, health).start()
    log.info("serving /metrics, /healthz, /readyz on port %d", endpoint.port, extra={"metrics_port": endpoint.port})
    if settings.nats_insecure:
        log.warning(
            "VGW_NATS_INSECURE is set: NATS may be reached without credentials. For local experiments only; "
            "see docs/security.md"
        )
    elif not settings.nats_has_credentials:
        log.warning("connecting to NATS on loopback without credentials (see docs/security.md)")
    bus = Bus(
        settings.nats_options(),
        source=f"/vgw/{name}/{settings.instance_id}",
        identity=settings.nats_identity,
        js_replicas=settings.js_replicas,
    )
    health.add_check("nats", lambda: (bus.is_connected, "NATS not connected"))

    app: ServiceApp[S] | None = None
    supervisor = Supervisor(name, health)
    try:
        if not await bus.connect_forever(stopping):
            return 0
        await bus.ensure_event_stream(settings.event_stream_max_age_s, settings.event_stream_max_bytes)
        app = app_factory(settings)
        # A start may wait long (e.g. for a bucket its writer has not created yet): SIGTERM cuts it short.
        starting = asyncio.ensure_future(
            app.start(
                Runtime(name=name, settings=settings, bus=bus, health=health, stopping=stopping, supervisor=supervisor)
            )
        )
        stop_wait = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return await _shutdown(health, app, supervisor, bus, endpoint, settings.shutdown_timeout_s)
        starting.result()
        health.set_started()
        log.info("%s started", name)
        await stopping.wait()
    except Exception:
        log.exception("%s failed", name)
        await _shutdown(health, app, supervisor, bus, endpoint, settings.shutdown_timeout_s)
        return 1
    return await _shutdown(health, app, supervisor, bus, endpoint, settings.shutdown_timeout_s)


async def _shutdown(
    health: Health,
    app: ServiceApp[S] | None,
    supervisor: Supervisor,
    bus: Bus,
    endpoint: MetricsEndpoint,
    timeout_s: float,
) -> int:
    health.set_stopping()
    code = 0
    try:
        async with asyncio.timeout(timeout_s):
            if app is not None:
                await app.stop()
            await supervisor.stop()
            await bus.drain()
    except TimeoutError:
        log.error("shutdown took longer than %.1fs; closing anyway", timeout_s)
        await bus.close()
        code = 1
    except Exception:
        log.exception("error during shutdown")
        code = 1
    shutdown_tracing()
    endpoint.stop()
    log.info("stopped")
    return code
