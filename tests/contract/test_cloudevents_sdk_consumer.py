"""Contract: a system that uses only nats-py and the CloudEvents SDK reads VGW's events, and the
data validates against the checked-in JSON Schema."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path

from jsonschema import Draft202012Validator, FormatChecker

from tests.support.nats_server import NatsServer
from vgw.bus import Bus
from vgw.events import BackendDown, Endpoint

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE.parents[1] / "docs" / "events"


async def test_foreign_consumer_reads_vgw_event(
    bus: Bus, nats_server: NatsServer, child_env: dict[str, str], spans: object
) -> None:
    event = BackendDown(
        service="web-http",
        vip="192.0.2.10",
        port=443,
        protocol="tcp",
        backend=Endpoint(address="2001:db8::5", port=8443),
        check="https",
        check_kind="https",
        previous_state="up",
        reason="tls_error",
        detail="certificate expired",
        last_latency_ms=12.5,
        consecutive=2,
        checker="hc-2",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "ce_consumer.py"),
        nats_server.url,
        "vgw.v1.backend.down.>",
        stdout=asyncio.subprocess.PIPE,
        env=child_env,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            assert (await proc.stdout.readline()).strip() == b"READY"
        meta = await bus.publish(event)
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        got = json.loads(line)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    assert got["specversion"] == "1.0"
    assert got["type"] == "io.vgw.backend.down.v1"
    assert got["id"] == meta.id
    assert got["source"] == "/vgw/tests/main"
    assert got["subject"] == "service/web-http/backend/[2001:db8::5]:8443"
    assert got["datacontenttype"] == "application/json"
    assert meta.time is not None and datetime.fromisoformat(got["time"]) == meta.time
    assert got["traceparent"] and got["traceparent"].startswith("00-")
    schema = json.loads((SCHEMAS / "io.vgw.backend.down.v1.schema.json").read_text())
    Draft202012Validator(schema, format_checker=FormatChecker()).validate(got["data"])
    assert got["data"]["reason"] == "tls_error" and got["data"]["backend"] == {"address": "2001:db8::5", "port": 8443}
