"""Mass transition benchmark (issue #18): 1,000 of 10,000 backends go down at once.

A real nats-server; the config store holding 100 services x 100 backends on one VIP cluster of two
nodes (tests/config/gen.py), committed the way the config service commits; the ``vgw_health`` bucket
holding all 10,000 backends up, written the way healthcheck writes it. Per node a real ``vgw-shim``
process with a real ``vgw-fwd`` (``--no-huge``, one ``net_ring`` vdev, idle workers), and one real
``vgw-routectl`` (node n0; ExaBGP runs, its peer is unreachable: route control's decisions are what
is measured, not BGP).

Each run flips 1,000 backends (every tenth: 10 in each service) to down as healthcheck would: the
entries go to ``vgw_health`` 64 writes at a time (its writer's batch), each with its transition's
trace context, and a ``backend.down`` event per backend is published beside them. Then the same 1,000
come back up (a second burst, measured as well). Measured per burst:

* ``all_applied_s``: from the first write to every forwarder running a generation that has all
  1,000 changes (the forwarders' ``HELLO`` polled every 5 ms, each new generation's time noted; the
  ``CONFIG`` checked once the writes are done: applies happen only on a change of the desired
  state, so the last generation is the one with the whole burst); ``write_s``, how long the store
  took the writes, and ``after_writes_s``, the rest (the control plane's own delay);
* ``generations``: generations each forwarder went through for the burst (one per apply), and the
  shims' own ``vgw_shim_applies_total`` counts;
* ``cpu_s``: CPU seconds (user + system, /proc/<pid>/stat) of each shim and of routectl from the
  first write to 1 s after the last forwarder applied; ``idle_cpu_s_per_s``, the same processes
  over a quiet 1.5 s just before; ``loadavg_1m``: the machine is shared, and the figures move with it.

Goal: all_applied_s <= 1 s and one apply per forwarder. Median and spread over --runs runs (default
3); one JSON line per burst, then a summary table. Options: the shims' coalescing settings,
``--no-events``, ``--no-routectl``. Needs root, DPDK (dataplane/build/vgw-fwd) and nats-server;
about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.config.gen import generate
from tests.forwarder.fwdproc import FwdProcess, stop_session, vgw_fwd
from tests.forwarder.shimproc import vgw_shim, wait_for
from tests.support.health import health_entry
from tests.support.nats_server import NatsServer, free_port
from vgw.bus import Bus
from vgw.config import ConfigDocument
from vgw.config.store import ConfigStore
from vgw.events import BackendDown, BackendState, BackendUp, CheckKind, Endpoint, ProbeResult
from vgw.fwdctl import FwdClient
from vgw.health import HEALTH_BUCKET, HealthEntry, health_key
from vgw.store import KvStore

REPO = Path(__file__).resolve().parents[2]
SERVICES, PER_SERVICE = 100, 100
FLIP_EVERY = 10  # every tenth backend: 1,000 of 10,000
NODES = ("n0", "n1")
WRITE_BATCH = 64  # healthcheck's writer puts 64 entries at a time
GOAL_S = 1.0


class Backend:
    def __init__(self, service: str, vip: str, port: int, address: str, bport: int, check: str) -> None:
        self.service, self.vip, self.port, self.address, self.bport, self.check = (
            service,
            vip,
            port,
            address,
            bport,
            check,
        )
        self.key = health_key(address, bport, check)


def backends_of(raw: dict[str, Any]) -> list[Backend]:
    out = []
    for vip in raw["vips"]:
        for s in vip["services"]:
            for b in s["backends"]:
                out.append(Backend(s["name"], vip["address"], s["port"], b["address"], b["port"], s["health_check"]))
    return out


def entry(b: Backend, state: BackendState) -> HealthEntry:
    return health_entry(
        b.address, b.bport, b.check, state, checker="bench", failure=ProbeResult.TIMEOUT, detail="bench: rack down",
        consecutive=3, traceparent=f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
    )  # fmt: skip


def event(b: Backend, state: BackendState) -> BackendUp | BackendDown:
    cls = BackendUp if state == BackendState.UP else BackendDown
    return cls(
        service=b.service,
        vip=b.vip,
        port=b.port,
        protocol="tcp",
        backend=Endpoint(address=b.address, port=b.bport),
        check=b.check,
        check_kind=CheckKind.TCP,
        previous_state=BackendState.DOWN if state == BackendState.UP else BackendState.UP,
        reason=ProbeResult.OK if state == BackendState.UP else ProbeResult.TIMEOUT,
        consecutive=3,
        checker="bench",
    )


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(port: int, name: str, labels: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


class Node:
    def __init__(self, node: str, fwd: FwdProcess, shim: subprocess.Popen[bytes], metrics_port: int) -> None:
        self.node, self.fwd, self.shim, self.metrics_port = node, fwd, shim, metrics_port
        self.client = FwdClient(str(fwd.socket), timeout_s=30)

    async def generation(self) -> int:
        return int((await self.client.hello())["generation"])

    async def draining(self) -> set[str]:
        text = await self.client.config()
        return {ln.split()[2] for ln in text.splitlines() if ln.startswith("backend ") and ln.endswith(" draining")}

    def applies(self) -> dict[str, float]:
        return {
            m: metric(self.metrics_port, "vgw_shim_applies_total", f'mode="{m}",result="ok"') for m in ("delta", "full")
        }


@contextlib.contextmanager
def routectl(nats_url: str, work: Path, metrics_port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "OTEL_"))}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
            "VGW_NATS_URL": nats_url,
            "VGW_NODE_ID": "n0",
            "VGW_INSTANCE_ID": "routectl-bench-n0",
            "VGW_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
            "VGW_RUN_DIR": str(work / "routectl"),
            "VGW_LOG_LEVEL": "warning",
            "VGW_HOLD_DOWN_S": "0",
            "VGW_STARTUP_WAIT_S": "1",
            "OTEL_TRACES_EXPORTER": "none",
        }
    )
    with open(work / "routectl.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.routectl.main"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        stop_session(proc)


async def write_burst(
    hkv: KvStore[HealthEntry], bus: Bus, flip: list[Backend], state: BackendState, with_events: bool
) -> float:
    """The healthcheck's way: entries 64 at a time, an event per transition beside them; returns the
    seconds the writes took."""
    t0 = time.monotonic()

    async def entries() -> None:
        for i in range(0, len(flip), WRITE_BATCH):
            await asyncio.gather(*(hkv.put(b.key, entry(b, state)) for b in flip[i : i + WRITE_BATCH]))

    async def events() -> None:
        for i in range(0, len(flip), WRITE_BATCH):
            await asyncio.gather(*(bus.publish(event(b, state)) for b in flip[i : i + WRITE_BATCH]))

    await asyncio.gather(entries(), events() if with_events else asyncio.sleep(0))
    return time.monotonic() - t0


async def watch_generations(n: Node, stop: asyncio.Event) -> list[tuple[float, int]]:
    """HELLO every 5 ms until ``stop``: (time first seen, generation) of each generation. Only the
    cheap HELLO while the burst runs: a CONFIG dump of 10,000 backends parsed here would stall this
    process's writes for tens of milliseconds, and the shims would see the pause as the burst's end."""
    seen: list[tuple[float, int]] = []
    while not stop.is_set():
        g = await n.generation()
        if not seen or seen[-1][1] != g:
            seen.append((time.monotonic(), g))
        await asyncio.sleep(0.005)
    return seen


async def burst(
    nodes: list[Node],
    rc_pid: int,
    hkv: KvStore[HealthEntry],
    bus: Bus,
    flip: list[Backend],
    state: BackendState,
    with_events: bool,
) -> dict[str, Any]:
    want = {b.address for b in flip} if state == BackendState.DOWN else set()
    pids = {f"shim_{n.node}": n.shim.pid for n in nodes}
    if rc_pid:
        pids["routectl"] = rc_pid
    gens0 = [await n.generation() for n in nodes]
    applies0 = [n.applies() for n in nodes]
    # idle reference: the same processes over a quiet 1.5 s just before
    idle0 = {k: cpu_s(p) for k, p in pids.items()}
    await asyncio.sleep(1.5)
    idle = {k: cpu_s(p) - idle0[k] for k, p in pids.items()}
    cpu0 = {k: cpu_s(p) for k, p in pids.items()}
    stop = asyncio.Event()
    watchers = [asyncio.create_task(watch_generations(n, stop)) for n in nodes]
    t0 = time.monotonic()
    write_s = await write_burst(hkv, bus, flip, state, with_events)

    async def settled() -> bool:
        # the last write is in and every forwarder runs the burst's outcome
        return all([await n.draining() == want for n in nodes])

    await wait_for(settled, 30, "the burst applied", step=0.2)
    # what the burst still costs after the last apply (routectl's decisions); later generations
    # would show here too
    await asyncio.sleep(1.0)
    stop.set()
    seen = await asyncio.gather(*watchers)
    window = time.monotonic() - t0
    cpu = {k: round(cpu_s(p) - cpu0[k], 3) for k, p in pids.items()}
    applies1 = [n.applies() for n in nodes]
    # a forwarder is done when its last generation appeared: applies happen only on a change of the
    # desired state, so no generation comes after the one that has the whole burst
    done = [(s[-1][0] - t0, s[-1][1]) for s in seen]
    gens = [s[-1][1] for s in seen]
    t_all = t0 + max(d[0] for d in done)
    return {
        "case": f"mass_{'down' if state == BackendState.DOWN else 'up'}",
        "backends": SERVICES * PER_SERVICE,
        "changed": len(flip),
        "write_s": round(write_s, 3),
        "all_applied_s": round(t_all - t0, 3),
        "after_writes_s": round(t_all - t0 - write_s, 3),
        "applied_s": {n.node: round(d[0], 3) for n, d in zip(nodes, done, strict=True)},
        "generation_times_s": {n.node: [round(t - t0, 3) for t, _ in s[1:]] for n, s in zip(nodes, seen, strict=True)},
        "generations": {n.node: g1 - g0 for n, g0, g1 in zip(nodes, gens0, gens, strict=True)},
        "shim_applies": {
            n.node: {m: int(a1[m] - a0[m]) for m in a1} for n, a0, a1 in zip(nodes, applies0, applies1, strict=True)
        },
        "cpu_s": cpu,
        "window_s": round(window, 3),
        "idle_cpu_s_per_s": {k: round(v / 1.5, 3) for k, v in idle.items()},
        "loadavg_1m": os.getloadavg()[0],
        "goal_s": GOAL_S,
    }


async def bench(args: argparse.Namespace, nats: NatsServer, nodes: list[Node], rc_pid: int) -> list[dict[str, Any]]:
    raw = generate(SERVICES, PER_SERVICE)
    all_b = backends_of(raw)
    bus = Bus({"servers": [nats.url]}, source="/vgw/bench/mass-transition")
    await bus.connect()
    try:
        hkv = await KvStore.attach(bus, HEALTH_BUCKET, HealthEntry)
        for n in nodes:
            await wait_for(lambda n=n: ready(n.metrics_port), 60, f"shim {n.node} ready")

        async def programmed(n: Node) -> bool:
            text = await n.client.config()
            return text.count("\nbackend ") == SERVICES * PER_SERVICE

        for n in nodes:
            await wait_for(lambda n=n: programmed(n), 60, f"forwarder {n.node} programmed")
        results: list[dict[str, Any]] = []
        for r in range(args.runs):
            flip = all_b[r % FLIP_EVERY :: FLIP_EVERY]
            for state in (BackendState.DOWN, BackendState.UP):
                res = await burst(nodes, rc_pid, hkv, bus, flip, state, not args.no_events)
                res["run"] = r + 1
                print(json.dumps(res), flush=True)
                results.append(res)
        return results
    finally:
        await bus.close()


async def seed(nats: NatsServer) -> None:
    raw = generate(SERVICES, PER_SERVICE)
    bus = Bus({"servers": [nats.url]}, source="/vgw/bench/mass-transition")
    await bus.connect()
    try:
        await bus.ensure_event_stream()
        store = await ConfigStore(bus).open()
        await store.commit(ConfigDocument.model_validate(raw), actor="bench", reason="mass transition")
        hkv = await KvStore.open(bus, HEALTH_BUCKET, HealthEntry)
        bs = backends_of(raw)
        for i in range(0, len(bs), 256):
            await asyncio.gather(*(hkv.put(b.key, entry(b, BackendState.UP)) for b in bs[i : i + 256]))
    finally:
        await bus.close()


def summary(results: list[dict[str, Any]]) -> str:
    lines = [
        "| case | runs | all applied s (median, min-max) | writes s | after writes s | generations per forwarder "
        "| shim CPU s | routectl CPU s | load | goal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in sorted({r["case"] for r in results}):
        rs = [r for r in results if r["case"] == case]
        ts = [r["all_applied_s"] for r in rs]
        gens = sorted({g for r in rs for g in r["generations"].values()})
        shim = statistics.median(v for r in rs for k, v in r["cpu_s"].items() if k.startswith("shim_"))
        rc = statistics.median(r["cpu_s"].get("routectl", 0.0) for r in rs)
        ws = statistics.median(r["write_s"] for r in rs)
        aw = statistics.median(r["after_writes_s"] for r in rs)
        load = statistics.median(r["loadavg_1m"] for r in rs)
        ok = max(ts) <= GOAL_S and gens == [1]
        lines.append(
            f"| {case} | {len(rs)} | {statistics.median(ts):.3f} ({min(ts):.3f}-{max(ts):.3f}) | "
            f"{ws:.3f} | {aw:.3f} | {', '.join(map(str, gens))} | {shim:.3f} | {rc:.3f} | {load:.1f} | "
            f"{'met' if ok else 'NOT met'} (<= {GOAL_S} s, 1 apply) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quiet-s", type=float, default=None, help="VGW_COALESCE_QUIET_S for the shims")
    parser.add_argument("--max-s", type=float, default=None, help="VGW_COALESCE_MAX_S for the shims")
    parser.add_argument("--no-events", action="store_true", help="write the entries only, no backend.down/up events")
    parser.add_argument("--no-routectl", action="store_true", help="shims and forwarders only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vgwmt"))
    nats = NatsServer(work / "nats").start()
    results: list[dict[str, Any]] = []
    try:
        asyncio.run(seed(nats))
        with contextlib.ExitStack() as stack:
            nodes: list[Node] = []
            ncpu = os.cpu_count() or 1
            for i, node in enumerate(NODES):
                lcores = f"0@{i % ncpu},1@{(i + 1) % ncpu}"
                eal = ["--lcores", lcores, "--vdev", f"net_ring{i}"]
                fwd_args = ["--single-arm", "--ext", f"net_ring{i},192.0.2.{10 + i}/24", "--workers", "1",
                            "--conn-capacity", "4096"]  # fmt: skip
                fwd = stack.enter_context(vgw_fwd(work, eal, fwd_args, memory_mb=512, wait_s=30))
                port = free_port()
                env = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "OTEL_"))}
                env.update(
                    {
                        "PYTHONPATH": str(REPO),
                        "VGW_NATS_URL": nats.url,
                        "VGW_NODE_ID": node,
                        "VGW_FWD_SOCKET": str(fwd.socket),
                        "VGW_METRICS_ADDR": f"127.0.0.1:{port}",
                        "VGW_INSTANCE_ID": f"shim-bench-{node}",
                        "VGW_LOG_LEVEL": "warning",
                        "OTEL_TRACES_EXPORTER": "none",
                    }
                )
                if args.quiet_s is not None:
                    env["VGW_COALESCE_QUIET_S"] = str(args.quiet_s)
                if args.max_s is not None:
                    env["VGW_COALESCE_MAX_S"] = str(args.max_s)
                shim = stack.enter_context(vgw_shim(env, work / f"shim-{node}.log"))
                nodes.append(Node(node, fwd, shim, port))
            rc = None if args.no_routectl else stack.enter_context(routectl(nats.url, work, free_port()))

            async def run() -> list[dict[str, Any]]:
                try:
                    return await bench(args, nats, nodes, rc.pid if rc else 0)
                finally:
                    for n in nodes:
                        await n.client.close()

            try:
                results = asyncio.run(run())
            except BaseException:
                for f in [*(work / f"shim-{n}.log" for n in NODES), work / "routectl.log"]:
                    with contextlib.suppress(OSError):
                        print(f"--- {f.name}\n{f.read_text()[-3000:]}", file=sys.stderr)
                raise
            assert rc is None or rc.poll() is None, "routectl exited during the benchmark"
    finally:
        nats.stop(kill=True)
        if os.environ.get("VGW_BENCH_KEEP"):
            print(f"# kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(summary(results))


if __name__ == "__main__":
    main()
