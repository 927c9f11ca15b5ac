"""Config benchmark: the real vgw-config process, a real nats-server (file storage) and a watcher in
another process (ConfigReader.watch, as the shim, healthcheck and routectl use it), on loopback.

Cases (one JSON line each, then a table):
  apply_10k_x10        a JSON document of 10,000 services x 10 backends applied over gRPC (the
                       document differs from the stored one in every backend): `apply_s` = call ->
                       committed; `visible_s` = call -> the watcher process holds the whole new
                       document. Median of RUNS runs. Target: visible_s <= 5.
  apply_10k_x10_yaml   the same document as YAML text (one run; YAML parsing is the difference).
  backend_change       one backend's state changed by SetBackendState on that 10k-service store,
                       200 times, sequentially: latency from the call to the watcher process holding
                       the new revision (`p50_ms`, `p99_ms`, `max_ms`), and from the commit's
                       timestamp to the watcher (`commit_to_watch_p99_ms`). Target: p99 <= 100 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.config.conftest import ConfigService
from tests.config.gen import generate
from tests.support.nats_server import NatsServer
from vgw.config.client import ConfigClient
from vgw.config.v1 import config_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
SERVICES = int(os.environ.get("VGW_BENCH_CONFIG_SERVICES", "10000"))
BACKENDS = 10
RUNS = 3
CHANGES = int(os.environ.get("VGW_BENCH_CONFIG_CHANGES", "200"))


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


class Watcher:
    """tests/config/watcher_proc.py in light mode; records when each revision became visible."""

    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests/config/watcher_proc.py"), url, "vgw_config", "light"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.seen: dict[int, dict[str, Any]] = {}
        self.cond = threading.Condition()
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(20):
            raise RuntimeError("watcher did not start")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            ev = json.loads(line)
            if ev.get("ready"):
                self.ready.set()
                continue
            with self.cond:
                self.seen[ev["revision"]] = ev
                self.cond.notify_all()

    def wait(self, revision: int, timeout: float = 60.0) -> dict[str, Any]:
        with self.cond:
            if not self.cond.wait_for(lambda: revision in self.seen, timeout):
                raise TimeoutError(f"watcher did not see revision {revision}")
            return self.seen[revision]

    async def await_revision(self, revision: int) -> dict[str, Any]:
        return await asyncio.to_thread(self.wait, revision)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (load-independent, unlike wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def with_weight(raw: dict[str, Any], w: int) -> dict[str, Any]:
    for vip in raw["vips"]:
        for s in vip["services"]:
            for b in s["backends"]:
                b["weight"] = w
    return raw


async def main() -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "OTEL_"))}
    # The watcher re-checks every revision as the services do; VGW_CONFIG_RECHECK=false measures without.
    recheck = os.environ.get("VGW_CONFIG_RECHECK", "true") != "false"
    env["VGW_CONFIG_RECHECK"] = "true" if recheck else "false"
    env["PYTHONPATH"] = str(REPO)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    with tempfile.TemporaryDirectory(prefix="vgw-bench-config-") as tmp:
        nats = NatsServer(Path(tmp) / "nats").start()
        svc = ConfigService(nats, Path(tmp) / "config", env, otel_sdk_disabled="true")
        watcher: Watcher | None = None
        try:
            svc.start()
            watcher = Watcher(nats.url, env)
            raw = generate(SERVICES, BACKENDS)
            async with ConfigClient(svc.addr, actor="bench", timeout_s=120) as c:
                assert svc.proc is not None
                spid, wpid = svc.proc.pid, watcher.proc.pid
                load_start = loadavg()
                applies, visibles, svc_cpu, watch_cpu = [], [], [], []
                doc_bytes = 0
                info: pb.RevisionInfo | None = None
                for run in range(RUNS):
                    data = json.dumps(with_weight(raw, 100 + run)).encode()
                    doc_bytes = len(data)
                    c0, w0 = cpu_s(spid), cpu_s(wpid)
                    t0 = time.time()
                    r = await c.apply(data, reason=f"bench run {run}")
                    t1 = time.time()
                    seen = await watcher.await_revision(r.revision)
                    assert seen["services"] == SERVICES and seen["backends"] == SERVICES * BACKENDS, seen
                    svc_cpu.append(cpu_s(spid) - c0)
                    watch_cpu.append(cpu_s(wpid) - w0)
                    applies.append(t1 - t0)
                    visibles.append(seen["t"] - t0)
                    info = r.info
                assert info is not None
                results.append(
                    {
                        "case": "apply_10k_x10",
                        "watcher_recheck": recheck,
                        "services": SERVICES,
                        "backends": SERVICES * BACKENDS,
                        "document_bytes": doc_bytes,
                        "apply_s": round(statistics.median(applies), 3),
                        "visible_s": round(statistics.median(visibles), 3),
                        "visible_max_s": round(max(visibles), 3),
                        "service_cpu_s": round(statistics.median(svc_cpu), 2),
                        "watcher_cpu_s": round(statistics.median(watch_cpu), 2),
                        "loadavg_1m": load_start,
                        "stored_bytes": info.bytes,
                        "chunks": info.chunks,
                        "runs": RUNS,
                        "target_visible_s": 5.0,
                    }
                )

                text = yaml.dump(with_weight(raw, 99), Dumper=yaml.CSafeDumper, sort_keys=False).encode()
                t0 = time.time()
                r = await c.apply(text, reason="bench yaml")
                t1 = time.time()
                seen = await watcher.await_revision(r.revision)
                results.append(
                    {
                        "case": "apply_10k_x10_yaml",
                        "services": SERVICES,
                        "document_bytes": len(text),
                        "apply_s": round(t1 - t0, 3),
                        "visible_s": round(seen["t"] - t0, 3),
                        "runs": 1,
                    }
                )

                lat, c2w = [], []
                load_start = loadavg()
                c0, w0 = cpu_s(spid), cpu_s(wpid)
                vip0 = raw["vips"][len(raw["vips"]) // 2]
                targets = [(s["name"], f"{b['address']}:{b['port']}") for s in vip0["services"] for b in s["backends"]]
                for i in range(CHANGES):
                    name, backend = targets[(i // 2) % len(targets)]
                    state = pb.BACKEND_STATE_DRAINING if i % 2 == 0 else pb.BACKEND_STATE_ENABLED
                    t0 = time.time()
                    r = await c.set_backend_state(backend, state, service=name, reason="bench")
                    assert r.committed, r
                    seen = await watcher.await_revision(r.revision)
                    lat.append((seen["t"] - t0) * 1000)
                    c2w.append((seen["t"] - r.info.created_at.ToDatetime().timestamp()) * 1000)
                results.append(
                    {
                        "case": "backend_change",
                        "watcher_recheck": recheck,
                        "changes": CHANGES,
                        "services": SERVICES,
                        "p50_ms": round(pct(lat, 0.5), 2),
                        "p99_ms": round(pct(lat, 0.99), 2),
                        "max_ms": round(max(lat), 2),
                        "commit_to_watch_p50_ms": round(pct(c2w, 0.5), 2),
                        "commit_to_watch_p99_ms": round(pct(c2w, 0.99), 2),
                        "service_cpu_ms_per_change": round((cpu_s(spid) - c0) / CHANGES * 1000, 2),
                        "watcher_cpu_ms_per_change": round((cpu_s(wpid) - w0) / CHANGES * 1000, 2),
                        "loadavg_1m": load_start,
                        "target_p99_ms": 100.0,
                    }
                )
        finally:
            if watcher is not None:
                watcher.stop()
            svc.stop()
            nats.stop(kill=True)
    return results


def render(results: list[dict[str, Any]]) -> str:
    rows = [("case", "measured", "target", "")]
    for r in results:
        if r["case"] == "apply_10k_x10":
            ok = "met" if r["visible_s"] <= r["target_visible_s"] else "MISSED"
            rows.append(
                (
                    f"apply {r['services']} services x 10 (JSON, {r['document_bytes'] / 1e6:.1f} MB)",
                    f"committed {r['apply_s']} s, whole at watcher {r['visible_s']} s (max {r['visible_max_s']}); "
                    f"CPU: service {r['service_cpu_s']} s, watcher {r['watcher_cpu_s']} s; load {r['loadavg_1m']}",
                    "<= 5 s",
                    ok,
                )
            )
        elif r["case"] == "apply_10k_x10_yaml":
            rows.append(
                (
                    f"same as YAML ({r['document_bytes'] / 1e6:.1f} MB)",
                    f"committed {r['apply_s']} s, whole at watcher {r['visible_s']} s",
                    "-",
                    "",
                )
            )
        else:
            ok = "met" if r["p99_ms"] <= r["target_p99_ms"] else "MISSED"
            rows.append(
                (
                    f"one-backend change -> watcher process ({r['changes']}x)",
                    f"p50 {r['p50_ms']} / p99 {r['p99_ms']} / max {r['max_ms']} ms "
                    f"(commit->watch p99 {r['commit_to_watch_p99_ms']} ms); CPU/change: service "
                    f"{r['service_cpu_ms_per_change']} ms, watcher {r['watcher_cpu_ms_per_change']} ms; "
                    f"load {r['loadavg_1m']}",
                    "p99 <= 100 ms",
                    ok,
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


if __name__ == "__main__":
    out = asyncio.run(main())
    for r in out:
        print(json.dumps(r))
    print()
    print(render(out))
