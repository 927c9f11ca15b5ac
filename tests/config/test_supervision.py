"""The config service's background tasks (gRPC health following NATS, chunk GC) are supervised: a
fault injected into each is counted, shows in readiness while the task is down, and the task runs
again. The service runs in this process against a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.config import metrics
from services.config.main import ConfigApp
from services.config.settings import ConfigSettings
from tests.support.inprocess import Fault, fails_then_recovers, running, task_restarts
from tests.support.nats_server import NatsServer

pytestmark = pytest.mark.integration


async def until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.02)


async def test_each_task_recovers(nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ConfigSettings(nats_url=nats_server.url, config_addr="127.0.0.1:0", config_gc_interval_s=0.05)
    app = ConfigApp(settings)
    health_set = Fault(app.health.set)
    monkeypatch.setattr(app.health, "set", health_set)
    gc_count = Fault(metrics.GC_DELETED.inc)
    monkeypatch.setattr(metrics.GC_DELETED, "inc", gc_count)
    async with running("config", app, settings) as rt:
        # chunk-gc: recording a GC round fails
        await until(lambda: gc_count.calls >= 1, what="chunk GC running")
        before = task_restarts("config", "chunk-gc")
        gc_count.armed = True
        calls = gc_count.calls
        await fails_then_recovers(rt, "chunk-gc", gc_count, before)
        await until(lambda: gc_count.calls > calls, what="chunk GC working again")

        # grpc-health: setting the gRPC status fails when NATS goes away; after its restart the status
        # follows NATS again (NOT_SERVING while away, SERVING when back)
        await until(lambda: health_set.calls >= 2, what="gRPC health set at start")
        before = task_restarts("config", "grpc-health")
        health_set.armed = True
        nats_server.stop(kill=True)
        try:
            calls = health_set.calls
            await fails_then_recovers(rt, "grpc-health", health_set, before, then_ready=False)  # NATS is away
            await until(lambda: health_set.calls > calls, what="gRPC health set again")
            assert await _grpc_status(app) == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            nats_server.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while await _grpc_status(app) != health_pb2.HealthCheckResponse.SERVING:
            assert loop.time() < deadline, "gRPC health not SERVING after NATS came back"
            await asyncio.sleep(0.1)
        await until(lambda: rt.health.readiness()[0], 15, what="ready again")


async def _grpc_status(app: ConfigApp) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(reply.status)
