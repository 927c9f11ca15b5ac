"""vgw-fwd's control path at the node limit (issue #13, docs/benchmarks.md "Forwarder control path").

One forwarder (1 worker, single-arm on a ``net_pcap`` vdev that replays 64-byte UDP packets of
4096 flows forever to one of the services, TX dropped) holds the largest configuration a node may
have: 4096 services, 65,536 backends (16 each, Maglev with the default 65537-entry tables), 16 LIPs
per service (the node's pool, as the shim renders it). Measured over the control socket, as the
shim sees it (request sent -> reply read):

* ``ctl_full_apply_cold``: the whole document into a forwarder that holds nothing (a start);
* ``ctl_full_apply_warm``: the same document again as a new generation (a shim restart): services
  whose content did not change are shared, not rebuilt;
* ``ctl_delta_one_backend``: one backend's state flipped (draining <-> active), 200 times: p50/p99;
* ``ctl_rss_1000_deltas``: resident memory before and after 1,000 such deltas (anon, file and
  shmem separately: the packet memory is shmem here because of ``--no-huge`` and hugepages in
  production, and the memory budget covers anon + file), and the forwarder's own cost report;
* ``ctl_mpps_during_deltas``: packets per second of the worker, idle windows and windows while
  deltas arrive at 10/s, and the ratio.

Each figure is the median over ``--runs`` forwarder runs (default 3). There is no peer to run
beside it here: DPVS and LVS/IPVS are not available on this machine (no IPVS module); the figures
before this work are in docs/benchmarks.md. Prints one JSON object per case, then a table. Needs
root and DPDK; bounded (about 2 minutes per run on a 2-vCPU VM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.bench_forwarder import make_pcap
from tests.forwarder.fwdproc import vgw_fwd
from tests.forwarder.topology import FWD_BIN
from vgw.fwdctl import FwdClient

SERVICES = 4096
BACKENDS_PER_SERVICE = 16
LIPS = [f"198.18.255.{i}" for i in range(1, 17)]
TRAFFIC_VIP = "192.0.2.10"  # make_pcap sends UDP to this VIP, port 53


def service_of(i: int) -> tuple[str, str, int]:
    """Name, VIP and port of service i; service 0 is the one the replayed traffic hits."""
    if i == 0:
        return "s0", TRAFFIC_VIP, 53
    return f"s{i}", f"192.0.2.{1 + i // 17}", 1000 + i % 17


def backend_of(i: int, j: int) -> str:
    k = i * BACKENDS_PER_SERVICE + j
    return f"198.{18 + k // 64000}.{k % 64000 // 250}.{1 + k % 250}"


def limit_document(generation: int) -> str:
    out = ["vgw-config 1", f"generation {generation}"]
    for i in range(SERVICES):
        name, vip, port = service_of(i)
        out.append(f"service {name} {'udp' if i == 0 else 'tcp'} {vip} {port} maglev")
        out += [f"lip {name} {a}" for a in LIPS]
        out += [
            f"backend {name} {backend_of(i, j)} {53 if i == 0 else 80} 100 active" for j in range(BACKENDS_PER_SERVICE)
        ]
    out.append("end")
    return "\n".join(out) + "\n"


class Deltas:
    """One backend's state flipped per delta, walking over every service and backend."""

    def __init__(self) -> None:
        self.n = 0
        self.draining: set[tuple[int, int]] = set()

    def next(self, generation: int) -> str:
        i = (self.n * 37) % SERVICES
        j = (self.n // SERVICES) % BACKENDS_PER_SERVICE
        self.n += 1
        key = (i, j)
        state = "active" if key in self.draining else "draining"
        self.draining ^= {key}
        port = 53 if i == 0 else 80
        return f"vgw-delta 1\ngeneration {generation}\nbackend state s{i} {backend_of(i, j)} {port} {state}\nend\n"


async def timed(c: FwdClient, coro: Any) -> float:
    t0 = time.perf_counter()
    await coro
    return time.perf_counter() - t0


async def inbound(c: FwdClient) -> int:
    return int((await c.stats())["counters"]["fwd_inbound"])


async def mpps(c: FwdClient, seconds: float) -> float:
    a0, t0 = await inbound(c), time.perf_counter()
    await asyncio.sleep(seconds)
    a1, t1 = await inbound(c), time.perf_counter()
    return (a1 - a0) / (t1 - t0) / 1e6


def forwarder_args(pcap: Path) -> tuple[list[str], list[str]]:
    ncpu = os.cpu_count() or 1
    lcores = f"0@0,1@{ncpu - 1}"  # the worker on the last CPU, the control thread on the first
    neigh = [
        a for j in range(BACKENDS_PER_SERVICE) for a in ("--neigh", f"{backend_of(0, j)},02:00:00:00:01:{j:02x},ext")
    ]
    eal = ["--lcores", lcores, "--vdev", f"net_pcap0,rx_pcap={pcap},infinite_rx=1"]
    args = ["--single-arm", "--ext", "net_pcap0,198.18.0.1/15", "--workers", "1", "--memory-budget", str(4 << 30)]
    return eal, args + neigh


async def one_run(sock: Path, doc: str, quick: bool) -> dict[str, Any]:
    c = FwdClient(str(sock), timeout_s=300)
    out: dict[str, Any] = {}
    try:
        gen = 1
        out["cold_s"] = await timed(c, c.apply(doc))
        gen += 1
        out["warm_s"] = await timed(c, c.apply(doc.replace("generation 1\n", f"generation {gen}\n", 1)))
        stats = await c.stats()
        out["cost"] = stats["memory"]["cost_bytes"]
        deltas = Deltas()
        times = []
        for _ in range(50 if quick else 200):
            gen += 1
            times.append(await timed(c, c.delta(deltas.next(gen))))
        out["delta_ms"] = [t * 1e3 for t in times]
        mem0 = (await c.stats())["memory"]
        for _ in range(200 if quick else 1000):
            gen += 1
            await c.delta(deltas.next(gen))
        await asyncio.sleep(0.5)  # the workers move on, the last retired generations are freed
        mem1 = (await c.stats())["memory"]
        out["mem_before"], out["mem_after"] = mem0, mem1
        windows = 2 if quick else 3
        idle = [await mpps(c, 2.0) for _ in range(windows)]
        stop = threading.Event()
        sent = [0]
        err: list[str] = []

        def sender(first_gen: int) -> None:
            async def go() -> None:
                d = FwdClient(str(sock), timeout_s=30)
                g = first_gen
                try:
                    next_t = time.monotonic()
                    while not stop.is_set():
                        g += 1
                        await d.delta(deltas.next(g))
                        sent[0] += 1
                        next_t += 0.1
                        await asyncio.sleep(max(0.0, next_t - time.monotonic()))
                except Exception as exc:  # reported below
                    err.append(repr(exc))
                finally:
                    await d.close()

            asyncio.run(go())

        t = threading.Thread(target=sender, args=(gen,))
        t0 = time.monotonic()
        t.start()
        busy = [await mpps(c, 2.0) for _ in range(windows)]
        stop.set()
        t.join()
        if err:
            raise RuntimeError(f"delta sender failed: {err[0]}")
        out["mpps_idle"], out["mpps_deltas"] = statistics.median(idle), statistics.median(busy)
        out["deltas_per_s"] = sent[0] / (time.monotonic() - t0)
        return out
    finally:
        await c.close()


RESULTS: list[dict[str, Any]] = []


def emit(rec: dict[str, Any]) -> None:
    RESULTS.append(rec)
    print(json.dumps(rec), flush=True)


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))]


def machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu or platform.processor()}, {os.cpu_count()} CPUs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer deltas and windows")
    args = ap.parse_args()
    if os.geteuid() != 0 or not FWD_BIN.exists():
        print("# skipped: needs root and dataplane/build/vgw-fwd", flush=True)
        return 0
    # This process and its delta sender stay on the control thread's CPU: the worker's CPU is
    # what is being measured.
    os.sched_setaffinity(0, {0})
    doc = limit_document(1)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vgw-ctlbench-") as tmp:
        work = Path(tmp)
        pcap = work / "udp.pcap"
        make_pcap(pcap, 4096, 0)
        eal, fwd_args = forwarder_args(pcap)
        for r in range(args.runs):
            with vgw_fwd(work, eal, fwd_args, memory_mb=512, wait_s=30) as fwd:
                runs.append(asyncio.run(one_run(fwd.socket, doc, args.quick)))
            print(
                f"# run {r + 1}/{args.runs}: cold {runs[-1]['cold_s']:.2f} s, warm {runs[-1]['warm_s']:.2f} s",
                flush=True,
            )
    size = {"services": SERVICES, "backends": SERVICES * BACKENDS_PER_SERVICE, "lips_per_service": len(LIPS)}
    med = statistics.median
    emit({"case": "ctl_full_apply_cold", **size, "s": round(med(r["cold_s"] for r in runs), 3),
          "runs_s": [round(r["cold_s"], 3) for r in runs], "goal_s": 1.0})  # fmt: skip
    emit({"case": "ctl_full_apply_warm", **size, "s": round(med(r["warm_s"] for r in runs), 3),
          "runs_s": [round(r["warm_s"], 3) for r in runs]})  # fmt: skip
    p50s = [pct(r["delta_ms"], 0.5) for r in runs]
    p99s = [pct(r["delta_ms"], 0.99) for r in runs]
    emit({"case": "ctl_delta_one_backend", **size, "p50_ms": round(med(p50s), 3), "p99_ms": round(med(p99s), 3),
          "max_ms": round(max(max(r["delta_ms"]) for r in runs), 3), "deltas_per_run": len(runs[0]["delta_ms"]),
          "goal_p99_ms": 5.0})  # fmt: skip
    anon0 = med(r["mem_before"]["rss_anon_bytes"] for r in runs)
    anon1 = med(r["mem_after"]["rss_anon_bytes"] for r in runs)
    file1 = med(r["mem_after"]["rss_file_bytes"] for r in runs)
    shm1 = med(r["mem_after"]["rss_shmem_bytes"] for r in runs)
    cost = runs[-1]["cost"]
    emit({"case": "ctl_rss_1000_deltas", **size, "rss_anon_before_bytes": int(anon0),
          "rss_anon_after_bytes": int(anon1), "rss_anon_growth_bytes": int(anon1 - anon0),
          "rss_file_bytes": int(file1), "rss_shmem_bytes": int(shm1), "budgeted_rss_bytes": int(anon1 + file1),
          "cost_total_bytes": cost["total"], "cost": cost, "within_cost": anon1 + file1 <= cost["total"]})  # fmt: skip
    idle = med(r["mpps_idle"] for r in runs)
    busy = med(r["mpps_deltas"] for r in runs)
    emit({"case": "ctl_mpps_during_deltas", **size, "mpps_idle": round(idle, 3), "mpps_with_deltas": round(busy, 3),
          "ratio": round(busy / idle, 3) if idle else 0.0,
          "deltas_per_s": round(med(r["deltas_per_s"] for r in runs), 1),
          "goal_ratio": 0.9, "pmd": "net_pcap infinite_rx -> tx drop, 1 worker"})  # fmt: skip
    print(f"\n# {machine()}; {args.runs} runs, medians")
    for rec in RESULTS:
        figures = {k: v for k, v in rec.items() if k not in {"case", "cost", "runs_s", *size}}
        print(f"{rec['case']:<26} " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
