"""Route-control benchmark: how fast a decision reaches a real router.

One VGW node (routectl + ExaBGP 5 in a network namespace) peers with BIRD 2 in another; a real
nats-server and the real config store. Times are measured from the input (health KV write +
backend event, or the last heartbeat) to the moment BIRD's RIB shows the change (``birdc`` polled
every 5 ms, so figures include up to ~5 ms of polling and the birdc round trip).

Cases (one JSON line each, then a table):
  health_to_withdraw     all backends down -> route gone at the router, p50/p99 ms (damping off)
  health_to_announce     a backend up again -> route back at the router, p50/p99 ms
  heartbeat_loss         last dataplane.status -> route gone (bound: 3 s stale + 1 s), p50 ms
  announce_vips          N VIPs become serviceable at once -> all N in BIRD's RIB, ms and VIPs/s
Needs root (namespaces) and BIRD 2 (``make setup``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.routectl.harness import BACKENDS, PREFIX, Health, Heartbeat, RoutectlProc, commit, make_doc
from tests.routectl.lab import Lab, kill_tree_leftovers
from tests.support.nats_server import NatsServer
from vgw.bus import Bus
from vgw.config import ConfigDocument
from vgw.config.store import ConfigStore

RUNS = 20
HEARTBEAT_RUNS = 3
MANY_VIPS = 500


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def wait_for(pred, timeout: float = 30.0, step: float = 0.005) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not await asyncio.to_thread(pred):
        if time.monotonic() - start > timeout:
            raise TimeoutError("condition not met")
        await asyncio.sleep(step)
    return time.monotonic()


def many_vips_doc(n: int) -> ConfigDocument:
    raw = make_doc(1).model_dump(mode="json")
    base = raw["vips"][0]
    raw["vips"] = []
    for i in range(n):
        addr = f"198.18.{i // 250}.{i % 250 + 1}"
        svc = dict(base["services"][0], name=f"web{i}", health_check=None)
        raw["vips"].append(dict(base, address=addr, services=[svc]))
    return ConfigDocument.model_validate(raw)


def route_count(lab: Lab) -> int:
    out = lab.birdc("show", "route", "count").stdout
    for line in out.splitlines():
        if "routes" in line and "networks" in line:
            return int(line.split()[0])
    return 0


async def main() -> list[dict[str, object]]:
    work = Path(tempfile.mkdtemp(prefix="vrcb"))
    nats = NatsServer(work / "nats").start()
    lab = Lab(work / "lab", nodes=1)
    bus = Bus({"servers": [nats.url]}, source="/vgw/bench/routectl")
    results: list[dict[str, object]] = []
    proc: RoutectlProc | None = None
    hb: Heartbeat | None = None
    try:
        lab.start()
        await bus.connect()
        await bus.ensure_event_stream()
        store = await ConfigStore(bus).open()
        rev = await commit(store, make_doc(1))
        health = await Health.open(bus, "vgw_health_n1")
        await health.set_all(True)
        hb = Heartbeat(bus, "n1", rev).start()
        proc = RoutectlProc(lab, 1, nats.url, work, log_level="warning").start()

        def announced() -> bool:
            return bool(lab.rib_next_hops(PREFIX))

        await wait_for(announced, 60.0)
        down: list[float] = []
        up: list[float] = []
        for _ in range(RUNS):
            t0 = time.monotonic()
            await health.set_all(False)
            down.append((await wait_for(lambda: not announced()) - t0) * 1000)
            t0 = time.monotonic()
            await health.set(BACKENDS[0], True)
            up.append((await wait_for(announced) - t0) * 1000)
            await health.set(BACKENDS[1], True)
        for case, xs in (("health_to_withdraw", down), ("health_to_announce", up)):
            results.append(
                {
                    "case": case,
                    "p50_ms": round(statistics.median(xs), 1),
                    "p99_ms": round(pct(xs, 0.99), 1),
                    "max_ms": round(max(xs), 1),
                    "runs": len(xs),
                }
            )

        lost: list[float] = []
        for _ in range(HEARTBEAT_RUNS):
            await hb.stop()
            last = hb.last_sent
            lost.append((await wait_for(lambda: not announced(), 10.0, 0.01) - last) * 1000)
            hb.start()
            await wait_for(announced, 10.0)
        results.append(
            {
                "case": "heartbeat_loss",
                "p50_ms": round(statistics.median(lost), 1),
                "max_ms": round(max(lost), 1),
                "bound_ms": 4000,
                "runs": len(lost),
            }
        )

        # Many VIPs at once: config first (forwarder not reporting them yet), then the heartbeat
        # that lists them all.
        doc = many_vips_doc(MANY_VIPS)
        rev = await commit(store, doc)
        await hb.stop()
        await wait_for(lambda: route_count(lab) == 0, 20.0, 0.02)
        hb.revision = rev
        hb.vips = [str(v.address) for v in doc.vips]
        t0 = time.monotonic()
        hb.start()
        t1 = await wait_for(lambda: route_count(lab) >= MANY_VIPS, 120.0, 0.02)
        ms = (t1 - t0) * 1000
        results.append(
            {
                "case": "announce_vips",
                "ms": round(ms, 1),
                "vips": MANY_VIPS,
                "vips_per_s": round(MANY_VIPS / (ms / 1000)),
            }
        )
    finally:
        if hb is not None:
            await hb.stop()
        if proc is not None:
            proc.terminate()
        await bus.close()
        lab.close()
        nats.stop(kill=True)
        kill_tree_leftovers(str(work))
        shutil.rmtree(work, ignore_errors=True)
    return results


def table(results: list[dict[str, object]]) -> str:
    lines = ["| case | figure |", "|---|---|"]
    for r in results:
        figs = ", ".join(f"{k} {v}" for k, v in r.items() if k != "case")
        lines.append(f"| {r['case']} | {figs} |")
    return "\n".join(lines)


if __name__ == "__main__":
    res = asyncio.run(main())
    for r in res:
        print(json.dumps(r))
    print()
    print(table(res))
