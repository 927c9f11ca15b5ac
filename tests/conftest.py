"""Shared fixtures: a real nats-server per test, a connected bus, and span collection."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.nats_server import NatsServer
from vgw.bus import Bus
from vgw.telemetry.tracing import setup_tracing

REPO = Path(__file__).resolve().parent.parent

# A suite started from a background job (nohup, `cmd &` in a script) inherits SIGINT ignored, and
# every process it starts would too: a vgwctl --watch that a test stops with SIGINT, as a person's
# Ctrl-C does, would never stop. Ignored is the only disposition exec keeps, so un-ignore it here.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    b = Bus({"servers": [nats_server.url], "reconnect_time_wait": 0.2}, source="/vgw/tests/main")
    await b.connect()
    await b.ensure_event_stream()
    try:
        yield b
    finally:
        await b.close()


_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """Spans finished in this test process (the global provider is installed once per session)."""
    setup_tracing("vgw-tests", "pytest", exporter=_EXPORTER)
    _EXPORTER.clear()
    return _EXPORTER


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment for subprocesses: the venv's Python, the repo importable, no stray VGW_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "OTEL_"))}
    env["PYTHONPATH"] = str(REPO)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env
