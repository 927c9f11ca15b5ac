"""The lab's scenarios: each runs steady client traffic through the router, injects one fault or
change, undoes it, and reports what the clients saw against the bound the design promises."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import net
from .lab import EXAMPLE, Lab
from .plan import NODES, SPARE_BACKEND, VIP
from .servers import BACKEND
from .traffic import Traffic, now, summarize

# From docs/config-example.yaml's web-http check: interval 1 s, fall 2.
HC_INTERVAL_S, HC_FALL = 1.0, 2


@dataclass
class Result:
    name: str
    summary: dict[str, object]
    measured: dict[str, float] = field(default_factory=dict)
    bound: str = ""
    passed: bool = True
    notes: list[str] = field(default_factory=list)
    fault_at: float = 0.0


def _wait(pred: Callable[[], bool], timeout: float, step: float = 0.05, since: float | None = None) -> float | None:
    """Seconds from ``since`` (a time.monotonic() taken before the action; default: now) until
    ``pred`` holds, or None after ``timeout``."""
    t0 = time.monotonic() if since is None else since
    while time.monotonic() - t0 < timeout:
        if pred():
            return round(time.monotonic() - t0, 2)
        time.sleep(step)
    return None


def _pids(ns: str, needle: str) -> list[int]:
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
    out = []
    for pid in r.stdout.split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            out.append(int(pid))
    return out


def _kill(pids: list[int]) -> None:
    for pid in pids:
        subprocess.run(["kill", "-9", str(pid)], check=False)


class Scenarios:
    def __init__(self, lab: Lab, say: Callable[[str], None] = print) -> None:
        self.lab = lab
        self.say = say
        assert lab.state is not None
        self.workdir = Path(lab.state.workdir)
        self.ext = {n: addr for n, (_id, addr) in NODES.items()}
        self._current: Traffic | None = None

    def _traffic(self, name: str, duration_s: float) -> Traffic:
        t = Traffic(self.lab.plan.client, self.workdir / f"traffic-{name}.jsonl", duration_s=duration_s)
        self._current = t.start(self.lab._env())
        return self._current

    def _both_announced(self) -> bool:
        return self.lab.router_next_hops() == set(self.ext.values())

    def backend_failure(self) -> Result:
        self.say("scenario backend-failure: kill backend-1 (198.51.100.21) under steady traffic")
        p = self.lab.plan
        t = self._traffic("backend-failure", 22)
        time.sleep(5)
        fault = now()
        _kill(_pids(p.backend(1), "backend-1"))
        time.sleep(10)
        self._start_backend(1)
        s = summarize(t.wait(), fault)
        bound = HC_FALL * HC_INTERVAL_S + 1.0
        r = Result("backend-failure", s, {"recovered_after_s": float(s["recovered_after_s"])},  # type: ignore[arg-type]
                   f"recovery <= fall x interval + 1 s = {bound:.1f} s", fault_at=fault)  # fmt: skip
        r.passed = float(s["recovered_after_s"]) <= bound and s["failed_before_fault"] == 0  # type: ignore[arg-type]
        r.notes.append("failures are connections sent to the dead backend before the health check declared it down")
        time.sleep(3)
        return r

    def node_failure(self) -> Result:
        self.say("scenario node-failure: kill -9 node-a's forwarder under steady traffic")
        p = self.lab.plan
        t = self._traffic("node-failure", 20)
        time.sleep(5)
        fault, t_kill = now(), time.monotonic()
        _kill(_pids(p.node("a"), "vgw-fwd"))
        moved = _wait(lambda: self.lab.router_next_hops() == {self.ext["b"]}, 20, since=t_kill)
        s = summarize(t.wait(), fault)
        r = Result("node-failure", s, {"router_moved_after_s": moved if moved is not None else -1.0,
                                       "recovered_after_s": float(s["recovered_after_s"])},  # type: ignore[arg-type]
                   "traffic on the other node within 5 s", fault_at=fault)  # fmt: skip
        r.passed = moved is not None and moved <= 5.0 and float(s["recovered_after_s"]) <= 5.0  # type: ignore[arg-type]
        self.say("  restarting node-a's forwarder; the shim re-applies the full state")
        t_restart = time.monotonic()
        self.lab.start_forwarder("a")
        back = _wait(self._both_announced, 30, since=t_restart)
        r.measured["reannounced_after_restart_s"] = back if back is not None else -1.0
        r.passed = r.passed and back is not None
        return r

    def node_isolate(self) -> Result:
        self.say("scenario node-isolate: vgwctl node isolate node-a, then restore, under steady traffic")
        t = self._traffic("node-isolate", 16)
        time.sleep(4)
        fault, t_isolate = now(), time.monotonic()
        out = self.lab.vgwctl("node", "isolate", "node-a", "--reason", "lab scenario node-isolate")
        try:
            moved = _wait(lambda: self.lab.router_next_hops() == {self.ext["b"]}, 15, since=t_isolate)
            time.sleep(4)
        finally:
            t_restore = time.monotonic()
            self.lab.vgwctl("node", "restore", "node-a", "--reason", "lab scenario node-isolate done")
        back = _wait(self._both_announced, 20, since=t_restore)
        s = summarize(t.wait(), fault)
        r = Result("node-isolate", s, {"withdrawn_after_s": moved if moved is not None else -1.0,
                                       "restored_after_s": back if back is not None else -1.0},
                   "zero failed requests", fault_at=fault)  # fmt: skip
        r.passed = out.returncode == 0 and moved is not None and back is not None and s["failed"] == 0
        if out.returncode != 0:
            r.notes.append(f"vgwctl node isolate: {out.stderr.strip()[:200]}")
        return r

    def config_change(self) -> Result:
        self.say("scenario config-change: add backend 198.51.100.24 to www-http with vgwctl apply")
        doc = yaml.safe_load(EXAMPLE.read_text())
        for vip in doc["vips"]:
            for svc in vip["services"]:
                if svc["name"] == "www-http":
                    svc["backends"].append({"address": SPARE_BACKEND[1], "port": 8080, "weight": 100})
        changed = self.workdir / "config-added-backend.yaml"
        changed.write_text(yaml.safe_dump(doc, sort_keys=False))
        t = self._traffic("config-change", 16)
        time.sleep(4)
        fault = now()
        out = self.lab.vgwctl("apply", "-f", str(changed), "--reason", "lab scenario config-change: add a backend")
        try:
            time.sleep(8)
            s = summarize(t.wait(), fault)
        finally:
            self.lab.vgwctl("apply", "-f", str(EXAMPLE), "--reason", "lab scenario config-change: back to the example")
        new_backend = f"backend-{SPARE_BACKEND[0]}"
        served = int(s["spread"].get(new_backend, 0))  # type: ignore[attr-defined]
        r = Result("config-change", s, {"requests_to_new_backend": float(served)}, "zero failed requests",
                   fault_at=fault)  # fmt: skip
        r.passed = out.returncode == 0 and s["failed"] == 0 and served > 0
        if out.returncode != 0:
            r.notes.append(f"vgwctl apply: {out.stderr.strip()[:200]}")
        time.sleep(2)
        return r

    def monitor_blackhole(self) -> Result:
        self.say("scenario monitor-blackhole: node-a's link silently drops the VIP's traffic (nftables at its port)")
        p = self.lab.plan
        port = p.node_ext("a") + "p"
        t = self._traffic("monitor-blackhole", 30)
        time.sleep(4)
        fault, t_fault = now(), time.monotonic()
        # Frames for the VIP towards node-a's port are dropped, whether the router sends them (routed
        # clients) or the bridge forwards them (the monitor's probes steered through node-a); BGP and
        # everything else to node-a pass, so nothing but the VIP's traffic is lost: a silent blackhole.
        drop = f'oifname "{port}" ip daddr {VIP} drop;'
        rules = (
            "table bridge vgwlab {\n"
            f" chain blackhole_out {{ type filter hook output priority 0; {drop} }}\n"
            f" chain blackhole_forward {{ type filter hook forward priority 0; {drop} }}\n"
            "}\n"
        )
        nft = subprocess.run(
            ["ip", "netns", "exec", p.router, "nft", "-f", "-"],
            input=rules,
            text=True,
            capture_output=True,
            check=False,
        )
        if nft.returncode != 0:
            raise net.NetError(f"nft: {nft.stderr.strip()}")
        try:
            moved = _wait(lambda: self.lab.router_next_hops() == {self.ext["b"]}, 25, since=t_fault)
            time.sleep(3)
        finally:
            t_repair = time.monotonic()
            self._unblackhole()
        back = _wait(self._both_announced, 40, since=t_repair)
        s = summarize(t.wait(), fault)
        r = Result("monitor-blackhole", s, {
            "withdrawn_after_s": moved if moved is not None else -1.0,
            "restored_after_repair_s": back if back is not None else -1.0,
            "recovered_after_s": float(s["recovered_after_s"]),  # type: ignore[arg-type]
        }, "the monitor names node-a, routectl withdraws it, clients recover; back after the hold-down",
            fault_at=fault)  # fmt: skip
        r.passed = moved is not None and back is not None
        return r

    def _start_backend(self, i: int) -> None:
        self.lab._start(f"backend-{i}", [sys.executable, "-c", BACKEND, f"backend-{i}"], ns=self.lab.plan.backend(i))

    def _unblackhole(self) -> None:
        net.sh("nft", "delete", "table", "bridge", "vgwlab", ns=self.lab.plan.router, check=False)

    def heal(self) -> None:
        """Undo whatever a scenario left broken (it failed half-way, or was interrupted), so the next
        one starts on a healthy lab. Every step is idempotent."""
        p = self.lab.plan
        if self._current is not None:
            self._current.stop()
        self._unblackhole()
        if not _pids(p.backend(1), "backend-1"):
            self._start_backend(1)
        if not _pids(p.node("a"), "vgw-fwd"):
            self.lab.start_forwarder("a")
        if _wait(self._both_announced, 60) is None:
            self.say("  warning: the lab did not recover both announcements after the scenario")

    ALL = ("backend-failure", "node-failure", "node-isolate", "config-change", "monitor-blackhole")

    def run(self, name: str) -> Result:
        try:
            return self._scenario(name)
        finally:
            self.heal()

    def _scenario(self, name: str) -> Result:
        return {
            "backend-failure": self.backend_failure,
            "node-failure": self.node_failure,
            "node-isolate": self.node_isolate,
            "config-change": self.config_change,
            "monitor-blackhole": self.monitor_blackhole,
        }[name]()
