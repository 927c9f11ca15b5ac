"""Consumer half of the cross-process trace test: handles one event with vgw.bus, then prints the
spans it recorded (in-memory exporter) as one JSON line.

Usage: python trace_consumer.py NATS_URL
"""

import asyncio
import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vgw.bus import Bus, Received
from vgw.events import BackendDown
from vgw.telemetry.tracing import setup_tracing


async def main(url: str) -> None:
    exporter = InMemorySpanExporter()
    setup_tracing("trace-consumer", exporter=exporter)
    bus = Bus({"servers": [url]}, source="/vgw/tests/consumer")
    await bus.connect()
    done = asyncio.Event()

    async def handle(r: Received) -> None:
        with trace.get_tracer("test").start_as_current_span("apply backend down"):
            pass
        done.set()

    await bus.subscribe(handle, types=[BackendDown])
    print("READY", flush=True)
    await asyncio.wait_for(done.wait(), 30)
    await bus.close()
    spans = [
        {
            "name": s.name,
            "kind": s.kind.name,
            "trace_id": f"{s.context.trace_id:032x}",
            "span_id": f"{s.context.span_id:016x}",
            "parent_span_id": f"{s.parent.span_id:016x}" if s.parent else None,
            "links": [
                {"trace_id": f"{lk.context.trace_id:032x}", "span_id": f"{lk.context.span_id:016x}"} for lk in s.links
            ],
            "attributes": dict(s.attributes or {}),
        }
        for s in exporter.get_finished_spans()
    ]
    print(json.dumps(spans), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
