"""Bus benchmark: what vgw.bus costs over plain nats-py, on a real nats-server on loopback.

Cases (median of RUNS runs each; one JSON line per case, then a table):
  codec_roundtrip      encode + decode + validate one backend.down event, in memory (us_per_event)
  publish_stored       vgw.bus.publish (stream-acknowledged, traced) events/s, sequential;
                       peer: plain nats-py js.publish of the same bytes
  publish_to_handler   latency from publish to a stream-backed vgw subscriber's handler, p50/p99 ms;
                       peers: plain nats-py JetStream publish -> ordered push consumer callback (the same
                       storage path, without vgw), and core publish -> core subscriber (no storage at all)
The peer is the floor that any NATS client pays; `ratio` = vgw / peer (throughput) or peer / vgw
(latency), so 1.0 means no overhead and lower means slower.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.js.api import DeliverPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.nats_server import NatsServer
from vgw.bus import Bus, Received
from vgw.events import BackendDown, Endpoint, decode, encode
from vgw.telemetry.tracing import setup_tracing

RUNS = 5
PUBLISHES = 2000
LATENCY_SAMPLES = 400


def event(i: int) -> BackendDown:
    return BackendDown(
        service="web",
        vip="192.0.2.10",
        port=80,
        protocol="tcp",
        backend=Endpoint(address="198.51.100.5", port=1024 + i % 60000),
        check="tcp",
        check_kind="tcp",
        previous_state="up",
        reason="refused",
        consecutive=3,
        checker="bench",
    )


def codec_us() -> float:
    ev = event(1)
    n = 5000
    start = time.perf_counter()
    for _ in range(n):
        enc = encode(ev, source="/bench")
        decode(enc.subject, enc.headers, enc.body)
    return (time.perf_counter() - start) / n * 1e6


async def publish_rate(publish: Callable[[int], Awaitable[object]]) -> float:
    start = time.perf_counter()
    for i in range(PUBLISHES):
        await publish(i)
    return PUBLISHES / (time.perf_counter() - start)


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


async def vgw_latency(bus: Bus) -> list[float]:
    got: asyncio.Queue[float] = asyncio.Queue()

    async def handler(r: Received) -> None:
        got.put_nowait(time.perf_counter())

    sub = await bus.subscribe(handler, types=[BackendDown])
    samples = []
    for i in range(LATENCY_SAMPLES):
        t0 = time.perf_counter()
        await bus.publish(event(i))
        samples.append((await asyncio.wait_for(got.get(), 5) - t0) * 1000)
    await sub.unsubscribe()
    return samples


async def raw_latency(nc: nats.NATS) -> list[float]:
    got: asyncio.Queue[float] = asyncio.Queue()

    async def cb(msg: object) -> None:
        got.put_nowait(time.perf_counter())

    enc = encode(event(0), source="/bench")
    sub = await nc.subscribe("bench.raw", cb=cb)
    await nc.flush()
    samples = []
    for _ in range(LATENCY_SAMPLES):
        t0 = time.perf_counter()
        await nc.publish("bench.raw", enc.body, headers=enc.headers)
        samples.append((await asyncio.wait_for(got.get(), 5) - t0) * 1000)
    await sub.unsubscribe()
    return samples


async def raw_js_latency(nc: nats.NATS) -> list[float]:
    """The same stored path vgw uses (acked publish, ordered push consumer), with nothing of vgw."""
    js = nc.jetstream()
    got: asyncio.Queue[float] = asyncio.Queue()

    async def cb(msg: object) -> None:
        got.put_nowait(time.perf_counter())

    enc = encode(event(0), source="/bench")
    sub = await js.subscribe("vgw.v1.backend.down.>", cb=cb, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    samples = []
    for _ in range(LATENCY_SAMPLES):
        t0 = time.perf_counter()
        await js.publish(enc.subject, enc.body, headers=enc.headers)
        samples.append((await asyncio.wait_for(got.get(), 5) - t0) * 1000)
    await sub.unsubscribe()
    return samples


async def main() -> list[dict[str, object]]:
    setup_tracing("bench")  # spans are created (as in production) but not exported
    results: list[dict[str, object]] = []
    codec = statistics.median(codec_us() for _ in range(RUNS))
    results.append({"case": "codec_roundtrip", "us_per_event": round(codec, 2), "runs": RUNS})

    with tempfile.TemporaryDirectory(prefix="vgw-bench-bus-") as tmp:
        server = NatsServer(Path(tmp) / "nats").start()
        try:
            bus = Bus({"servers": [server.url]}, source="/vgw/bench")
            await bus.connect()
            await bus.ensure_event_stream()
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            enc = encode(event(0), source="/bench")

            async def vgw_pub(i: int) -> object:
                return await bus.publish(event(i))

            async def raw_pub(i: int) -> object:
                return await js.publish(enc.subject, enc.body, headers=enc.headers)

            vgw_rates, raw_rates, vgw_lat, raw_lat, js_lat = [], [], [], [], []
            for _ in range(RUNS):
                vgw_rates.append(await publish_rate(vgw_pub))
                raw_rates.append(await publish_rate(raw_pub))
                vgw_lat.append(await vgw_latency(bus))
                raw_lat.append(await raw_latency(nc))
                js_lat.append(await raw_js_latency(nc))
            v, p = statistics.median(vgw_rates), statistics.median(raw_rates)
            results.append(
                {
                    "case": "publish_stored",
                    "events_per_s": round(v),
                    "peer": "nats-py js.publish",
                    "peer_events_per_s": round(p),
                    "ratio": round(v / p, 3),
                    "runs": RUNS,
                    "events": PUBLISHES,
                }
            )
            vp50 = statistics.median(pct(s, 0.5) for s in vgw_lat)
            vp99 = statistics.median(pct(s, 0.99) for s in vgw_lat)
            pp50 = statistics.median(pct(s, 0.5) for s in raw_lat)
            pp99 = statistics.median(pct(s, 0.99) for s in raw_lat)
            jp50 = statistics.median(pct(s, 0.5) for s in js_lat)
            jp99 = statistics.median(pct(s, 0.99) for s in js_lat)
            results.append(
                {
                    "case": "publish_to_handler",
                    "p50_ms": round(vp50, 3),
                    "p99_ms": round(vp99, 3),
                    "peer": "nats-py JetStream publish -> ordered push consumer",
                    "peer_p50_ms": round(jp50, 3),
                    "peer_p99_ms": round(jp99, 3),
                    "ratio_p50": round(jp50 / vp50, 3),
                    "core_nats_p50_ms": round(pp50, 3),
                    "core_nats_p99_ms": round(pp99, 3),
                    "runs": RUNS,
                    "samples": LATENCY_SAMPLES,
                }
            )
            await nc.close()
            await bus.close()
        finally:
            server.stop(kill=True)
    return results


def table(results: list[dict[str, object]]) -> str:
    rows = [("case", "vgw", "peer", "ratio")]
    for r in results:
        if r["case"] == "codec_roundtrip":
            rows.append(("codec_roundtrip", f"{r['us_per_event']} us/event", "-", "-"))
        elif r["case"] == "publish_stored":
            rows.append(
                ("publish_stored", f"{r['events_per_s']} ev/s", f"{r['peer_events_per_s']} ev/s", str(r["ratio"]))
            )
        else:
            rows.append(
                (
                    "publish_to_handler",
                    f"p50 {r['p50_ms']} / p99 {r['p99_ms']} ms",
                    f"p50 {r['peer_p50_ms']} / p99 {r['peer_p99_ms']} ms",
                    str(r["ratio_p50"]),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)


if __name__ == "__main__":
    out = asyncio.run(main())
    for r in out:
        print(json.dumps(r))
    print()
    print(table(out))
