"""One trace spans a publish in this process and its handling in another: a producer span here, a
consumer span there that is its child and links to it, and the handler's work inside it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.integration.test_bus import backend_down
from tests.support.nats_server import NatsServer
from vgw.bus import Bus

HERE = Path(__file__).resolve().parent


async def test_trace_crosses_processes(
    bus: Bus, nats_server: NatsServer, spans: InMemorySpanExporter, child_env: dict[str, str]
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "trace_consumer.py"),
        nats_server.url,
        stdout=asyncio.subprocess.PIPE,
        env=child_env,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            assert (await proc.stdout.readline()).strip() == b"READY"
        with trace.get_tracer("test").start_as_current_span("health transition"):
            await bus.publish(backend_down(1))
        async with asyncio.timeout(30):
            remote = json.loads(await proc.stdout.readline())
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    local = {s.name: s for s in spans.get_finished_spans()}
    root, producer = local["health transition"], local["send vgw.v1.backend.down"]
    assert producer.kind == SpanKind.PRODUCER
    assert producer.parent is not None and producer.parent.span_id == root.context.span_id
    assert producer.attributes is not None and producer.attributes["messaging.system"] == "nats"
    trace_id = f"{producer.context.trace_id:032x}"
    producer_id = f"{producer.context.span_id:016x}"

    by_name = {s["name"]: s for s in remote}
    consumer = by_name["process vgw.v1.backend.down"]
    assert consumer["kind"] == "CONSUMER"
    assert consumer["trace_id"] == trace_id, "the consumer is not in the producer's trace"
    assert consumer["parent_span_id"] == producer_id
    assert consumer["links"] == [{"trace_id": trace_id, "span_id": producer_id}]
    assert consumer["attributes"]["messaging.destination.name"] == "vgw.v1.backend.down.web.198-51-100-5_8001"
    handler = by_name["apply backend down"]
    assert handler["trace_id"] == trace_id and handler["parent_span_id"] == consumer["span_id"]
