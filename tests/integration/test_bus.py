"""The bus against a real nats-server: publish/subscribe, queue groups, replay, and garbage."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import nats
import pytest
from prometheus_client import REGISTRY

from tests.support.nats_server import NatsServer
from vgw.bus import Bus, Received
from vgw.events import BackendDown, BackendUp, ConfigChanged, DataplaneStatus, Endpoint, encode


def backend_down(n: int = 0, service: str = "web") -> BackendDown:
    return BackendDown(
        service=service,
        vip="192.0.2.10",
        port=80,
        protocol="tcp",
        backend=Endpoint(address="198.51.100.5", port=8000 + n),
        check="tcp",
        check_kind="tcp",
        previous_state="up",
        reason="refused",
        consecutive=3,
        checker="hc-1",
    )


def status(seq: int, node: str = "node-a") -> DataplaneStatus:
    return DataplaneStatus(node=node, seq=seq, interval_s=1.0, forwarder="up", generation=seq)


class Collector:
    def __init__(self) -> None:
        self.items: list[Received] = []
        self._cond = asyncio.Condition()

    async def __call__(self, r: Received) -> None:
        async with self._cond:
            self.items.append(r)
            self._cond.notify_all()

    async def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        async with asyncio.timeout(timeout):
            async with self._cond:
                await self._cond.wait_for(lambda: len(self.items) >= n)
        return self.items


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("vgw_bus_rejected_messages_total", {"reason": reason}) or 0.0


async def test_publish_subscribe_by_type(bus: Bus) -> None:
    got = Collector()
    await bus.subscribe(got, types=[BackendDown])
    await bus.subscribe(got, types=[BackendUp])  # no BackendUp is sent: must not receive anything
    meta = await bus.publish(backend_down(1))
    await bus.publish(status(1))  # other type: not for this subscriber
    items = await got.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(items) == 1
    r = items[0]
    assert r.event == backend_down(1)
    assert r.meta.id == meta.id and r.meta.source == "/vgw/tests/main"
    assert r.subject == "vgw.v1.backend.down.web.198-51-100-5_8001"
    assert r.stream_seq is not None


async def test_subscribe_by_subject_wildcard(bus: Bus) -> None:
    got = Collector()
    await bus.subscribe(got, subject="vgw.v1.backend.*.web.>")
    await bus.publish(backend_down(1, service="web"))
    await bus.publish(backend_down(2, service="api"))
    items = await got.wait_for(1)
    await asyncio.sleep(0.3)
    assert [r.event.service for r in items] == ["web"]  # type: ignore[attr-defined]


async def test_queue_group_delivers_each_event_once(bus: Bus, nats_server: NatsServer) -> None:
    other = Bus({"servers": [nats_server.url]}, source="/vgw/tests/other")
    await other.connect()
    try:
        a, b = Collector(), Collector()
        await bus.subscribe(a, types=[DataplaneStatus], queue="workers")
        await other.subscribe(b, types=[DataplaneStatus], queue="workers")
        await other.flush()
        for i in range(40):
            await bus.publish(status(i))
        async with asyncio.timeout(10):
            while len(a.items) + len(b.items) < 40:
                await asyncio.sleep(0.05)
        seqs = sorted(r.event.seq for r in a.items + b.items)  # type: ignore[attr-defined]
        assert seqs == list(range(40))
    finally:
        await other.close()


async def test_published_events_are_stored_and_since_replays(bus: Bus) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    for rev in (1, 2, 3):
        await bus.publish(ConfigChanged(revision=rev, action="apply", actor="test"))
    got = Collector()
    await bus.subscribe(got, types=[ConfigChanged], since=before)
    items = await got.wait_for(3)
    assert [r.event.revision for r in items] == [1, 2, 3]  # type: ignore[attr-defined]
    await bus.publish(ConfigChanged(revision=4, action="apply", actor="test"))
    items = await got.wait_for(4)
    assert items[-1].event.revision == 4  # type: ignore[attr-defined]


async def test_garbage_is_counted_and_skipped(bus: Bus, nats_server: NatsServer) -> None:
    got = Collector()
    await bus.subscribe(got, types=[BackendDown])
    raw = await nats.connect(nats_server.url)
    try:
        good = encode(backend_down(1), source="/raw")
        subject, h = good.subject, good.headers
        max_payload = raw.max_payload
        junk = b"\x00\xff" * ((max_payload - 4096) // 2)  # ~1 MiB of junk, just under the server limit
        cases = {
            "not_json": [(subject, h, b"this is not json"), (subject, h, junk)],
            "invalid_data": [(subject, h, json.dumps({"service": "web"}).encode())],
            "unknown_type": [(subject, {**h, "ce-type": "io.vgw.backend.exploded.v1"}, good.body)],
            "no_headers": [(subject, None, good.body)],
            "missing_attribute": [(subject, {"ce-specversion": "1.0"}, good.body)],
            "subject_mismatch": [("vgw.v1.backend.down.web.198-51-100-9_1", h, good.body)],
        }
        before = {reason: rejected(reason) for reason in cases}
        for sends in cases.values():
            for subj, headers, body in sends:
                await raw.publish(subj, body, headers=headers)
        await raw.flush()
        await bus.publish(backend_down(2))  # a good event after the garbage
        items = await got.wait_for(1)
        async with asyncio.timeout(10):
            while any(rejected(r) - before[r] < len(s) for r, s in cases.items()):
                await asyncio.sleep(0.05)
        for reason, sends in cases.items():
            assert rejected(reason) - before[reason] == len(sends), reason
        assert [r.event for r in items] == [backend_down(2)]
        # ... and the subscription still works afterwards
        await bus.publish(backend_down(3))
        assert (await got.wait_for(2))[1].event == backend_down(3)
    finally:
        await raw.close()


async def test_failing_handler_is_counted_and_does_not_stop_the_subscription(bus: Bus) -> None:
    got = Collector()

    async def flaky(r: Received) -> None:
        if r.event.seq == 0:  # type: ignore[attr-defined]
            raise RuntimeError("handler bug")
        await got(r)

    def errors():
        return REGISTRY.get_sample_value("vgw_bus_handler_errors_total", {"type": "io.vgw.dataplane.status.v1"}) or 0.0

    before = errors()
    await bus.subscribe(flaky, types=[DataplaneStatus])
    await bus.publish(status(0))
    await bus.publish(status(1))
    items = await got.wait_for(1)
    assert items[0].event.seq == 1  # type: ignore[attr-defined]
    assert errors() - before == 1


async def test_subscribe_argument_errors(bus: Bus) -> None:
    async def h(r: Received) -> None:
        pass

    with pytest.raises(ValueError, match="needs event types or a subject"):
        await bus.subscribe(h)
    with pytest.raises(ValueError, match="not in the event stream"):
        await bus.subscribe(h, subject="other.subject")
    with pytest.raises(ValueError, match="cannot replay"):
        await bus.subscribe(h, types=[BackendDown], queue="q", since=datetime.now(UTC))
