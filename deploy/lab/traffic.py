"""Steady client traffic through the router: short HTTP requests (one connection each) at a fixed
rate from the client namespace, each result a JSON line with its start time, for a bounded time or
until finished (SIGTERM: no new requests; those in flight are still recorded)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .plan import VIP, VIP_PORT

SCRIPT = r"""
import json, signal, sys, threading, time, urllib.request
url, rate, duration, timeout = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
lock = threading.Lock()
finished = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: finished.set())
def one(t0):
    start = time.time()
    try:
        body = urllib.request.urlopen(url, timeout=timeout).read().decode().strip()
        rec = {"t": start, "ok": True, "ms": round((time.time() - start) * 1000, 2), "backend": body}
    except Exception as e:
        err = type(e).__name__ + ": " + str(e)[:80]
        rec = {"t": start, "ok": False, "ms": round((time.time() - start) * 1000, 2), "err": err}
    with lock:
        print(json.dumps(rec), flush=True)
end = time.monotonic() + duration
nxt = time.monotonic()
threads = []
while time.monotonic() < end and not finished.is_set():
    th = threading.Thread(target=one, args=(nxt,), daemon=True)
    th.start(); threads.append(th)
    nxt += 1.0 / rate
    finished.wait(max(0.0, nxt - time.monotonic()))
for th in threads:
    th.join(timeout + 1)
"""


@dataclass
class Traffic:
    ns: str
    out: Path
    rate: float = 20.0
    duration_s: float = 30.0
    timeout_s: float = 2.0
    proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> Traffic:
        url = f"http://{VIP}:{VIP_PORT}/"
        with self.out.open("wb") as f:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-c", SCRIPT, url, str(self.rate),
                 str(self.duration_s), str(self.timeout_s)],
                stdout=f, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
            )  # fmt: skip
        return self

    def wait(self) -> list[dict[str, object]]:
        assert self.proc is not None
        self.proc.wait(self.duration_s + self.timeout_s + 30)
        return self.results()

    def finish(self) -> list[dict[str, object]]:
        """End the traffic now, with the requests in flight, and return every result."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(self.timeout_s + 30)
        return self.results()

    def results(self) -> list[dict[str, object]]:
        recs = []
        for line in self.out.read_text().splitlines():
            try:
                recs.append(json.loads(line))
            except ValueError:
                continue
        return sorted(recs, key=lambda r: float(str(r["t"])))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def summarize(recs: list[dict[str, object]], fault_at: float) -> dict[str, object]:
    failed = [r for r in recs if not r["ok"]]
    after = [r for r in failed if _f(r["t"]) >= fault_at - 2.5]  # requests in flight at the fault count
    spread: dict[str, int] = {}
    for r in recs:
        if r["ok"]:
            spread[str(r["backend"])] = spread.get(str(r["backend"]), 0) + 1
    last_fail = max((_f(r["t"]) + _f(r["ms"]) / 1000 for r in after), default=None)
    return {
        "sent": len(recs),
        "failed": len(failed),
        "failed_before_fault": len(failed) - len(after),
        "recovered_after_s": round(last_fail - fault_at, 2) if last_fail is not None else 0.0,
        "errors": sorted({str(r.get("err", ""))[:60] for r in failed})[:5],
        "spread": dict(sorted(spread.items())),
        "duration_s": round(_f(recs[-1]["t"]) - _f(recs[0]["t"]), 1) if recs else 0.0,
    }


def phase(recs: list[dict[str, object]], start: float | None, end: float | None) -> dict[str, object]:
    """Requests started in [start, end) (None: open): how many succeeded, and the latency of those
    that did (nearest-rank percentiles, ms)."""
    sel = [r for r in recs if (start is None or _f(r["t"]) >= start) and (end is None or _f(r["t"]) < end)]
    ok = sorted(_f(r["ms"]) for r in sel if r["ok"])
    return {
        "sent": len(sel),
        "ok": len(ok),
        "failed": len(sel) - len(ok),
        "ok_ratio": round(len(ok) / len(sel), 4) if sel else 0.0,
        "p50_ms": _pct(ok, 50),
        "p99_ms": _pct(ok, 99),
        "max_ms": ok[-1] if ok else 0.0,
        "errors": sorted({str(r.get("err", ""))[:60] for r in sel if not r["ok"]})[:3],
    }


def _pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return round(sorted_values[rank - 1], 2)


def _f(x: object) -> float:
    return float(str(x))


def now() -> float:
    return time.time()
