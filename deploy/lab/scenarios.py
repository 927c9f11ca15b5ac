"""The lab's scenarios: each runs steady client traffic through the router, injects one fault or
change, undoes it, and reports what the clients saw against the bound the design promises."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import net
from .flood import FLOOD_BIN, SERVICE, Flood, sample
from .lab import EXAMPLE, Lab, LabError
from .plan import FLOOD_SOURCES, NODES, SPARE_BACKEND, VIP
from .servers import BACKEND
from .timeline import Mark, MarkKind, Timeline, Window, mark, requests_timeline
from .traffic import Traffic, now, phase, summarize

# From docs/config-example.yaml's web-http check: interval 1 s, fall 2.
HC_INTERVAL_S, HC_FALL = 1.0, 2
# syn-flood: the share of legitimate requests that must succeed while the flood runs (issue #14).
SYN_FLOOD_MIN_OK = 0.99


@dataclass
class Result:
    name: str
    summary: dict[str, object]
    measured: dict[str, float] = field(default_factory=dict)
    bound: str = ""
    passed: bool = True
    notes: list[str] = field(default_factory=list)
    fault_at: float = 0.0
    # Measured and reported, with no bound to keep (e.g. a node failure without connection sync).
    informational: bool = False
    # What the clients saw over time and when things happened (timeline.py), for the HTML report
    # (htmlreport.py); None when the scenario ended before its clients ran.
    timeline: Timeline | None = None
    marks: list[Mark] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    # The bound as a time after the fault, where the bound is one (drawn on the timeline).
    deadline_s: float | None = None


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


# syn-flood: the flood's rate. The lab's links are veths and bridges, and the kernel queues what a
# veth sends on a per-CPU backlog (net.core.netdev_max_backlog, 1000 packets) that the flood shares
# with the backends' replies: uncapped (200k-430k pps on a 2-core machine) it overflowed, and the
# kernel dropped legitimate packets before any VGW code saw them (softnet drops = the backends'
# ports' RX drops; 1-4 of ~160 legitimate requests lost in some runs, with the proxy on or off NATS
# auth alike). 150k pps is above both auto thresholds and what this path carries without loss; the
# forwarder's own capacity under a flood is `vgw-synflood-bench`'s job (docs/benchmarks.md).
LAB_FLOOD_PPS = 150_000.0

BLACKHOLE_BOUND_S = 5.0
"""monitor-blackhole: from the fault to the router no longer using node-a (issue #18)."""


@dataclass(frozen=True)
class Pace:
    """How long a scenario watches the clients around its steps. Bounds and timeouts are not in it:
    the demo's pace draws readable graphs, the tests' is as short as what they assert allows."""

    lead_s: float  # steady traffic before the fault: the baseline
    outage_s: float  # backend-failure: how long the backend stays dead (above the recovery bound)
    watch_s: float  # after the lab reacted (moved, withdrawn, new backend serving): steady again
    tail_s: float  # after the last step, before the traffic ends


DEMO = Pace(lead_s=5.0, outage_s=10.0, watch_s=4.0, tail_s=4.0)
BRISK = Pace(lead_s=2.0, outage_s=6.0, watch_s=1.5, tail_s=1.0)
# The longest any scenario's traffic may run; each ends it itself (Traffic.finish) when done.
TRAFFIC_CAP_S = 120.0


class Scenarios:
    def __init__(
        self,
        lab: Lab,
        say: Callable[[str], None] = print,
        flood_s: float = 12.0,
        flood_pps: float = LAB_FLOOD_PPS,
        pace: Pace = DEMO,
    ) -> None:
        self.lab = lab
        self.say = say
        assert lab.state is not None
        self.workdir = Path(lab.state.workdir)
        self.ext = {n: addr for n, (_id, addr) in NODES.items()}
        self._current: Traffic | None = None
        self._flood: Flood | None = None
        self.flood_s = flood_s  # syn-flood: how long the flood lasts
        self.flood_pps = flood_pps  # syn-flood: rate cap, 0 = the highest rate the machine can send
        self.pace = pace

    def _traffic(self, name: str, duration_s: float = TRAFFIC_CAP_S) -> Traffic:
        t = Traffic(self.lab.plan.client, self.workdir / f"traffic-{name}.jsonl", duration_s=duration_s)
        self._current = t.start(self.lab._env())
        return self._current

    def _both_announced(self) -> bool:
        return self.lab.router_next_hops() == set(self.ext.values())

    def backend_failure(self) -> Result:
        self.say("scenario backend-failure: kill backend-1 (198.51.100.21) under steady traffic")
        p = self.lab.plan
        t = self._traffic("backend-failure")
        time.sleep(self.pace.lead_s)
        fault = now()
        _kill(_pids(p.backend(1), "backend-1"))
        time.sleep(self.pace.outage_s)
        restarted = now()
        self._start_backend(1)
        time.sleep(self.pace.tail_s)
        recs = t.finish()
        s = summarize(recs, fault)
        bound = HC_FALL * HC_INTERVAL_S + 1.0
        recovered = float(s["recovered_after_s"])  # type: ignore[arg-type]
        r = Result("backend-failure", s, {"recovered_after_s": recovered},
                   f"recovery <= fall x interval + 1 s = {bound:.1f} s", fault_at=fault, deadline_s=bound)  # fmt: skip
        r.passed = recovered <= bound and s["failed_before_fault"] == 0
        r.timeline = requests_timeline(recs)
        r.marks = (mark("backend-1 killed", fault, "fault") + _recovery(s, fault)
                   + mark("backend-1 restarted", restarted))  # fmt: skip
        r.notes.append("failures are connections sent to the dead backend before the health check declared it down")
        return r

    def node_failure(self) -> Result:
        self.say("scenario node-failure: kill -9 node-a's forwarder under steady traffic")
        p = self.lab.plan
        t = self._traffic("node-failure")
        time.sleep(self.pace.lead_s)
        fault, t_kill = now(), time.monotonic()
        _kill(_pids(p.node("a"), "vgw-fwd"))
        moved = _wait(lambda: self.lab.router_next_hops() == {self.ext["b"]}, 20, since=t_kill)
        time.sleep(self.pace.watch_s)
        recs = t.finish()
        s = summarize(recs, fault)
        recovered = float(s["recovered_after_s"])  # type: ignore[arg-type]
        r = Result("node-failure", s, {"router_moved_after_s": moved if moved is not None else -1.0,
                                       "recovered_after_s": recovered},
                   "traffic on the other node within 5 s", fault_at=fault, deadline_s=5.0)  # fmt: skip
        r.passed = moved is not None and moved <= 5.0 and recovered <= 5.0
        r.timeline = requests_timeline(recs)
        r.marks = (mark("node-a's vgw-fwd killed", fault, "fault") + _last_failure(s, fault, "event")
                   + mark("router: node-b only", None if moved is None else fault + moved, "recovery"))  # fmt: skip
        self.say("  restarting node-a's forwarder; the shim re-applies the full state")
        restart_at, t_restart = now(), time.monotonic()
        self.lab.start_forwarder("a")
        back = _wait(self._both_announced, 30, since=t_restart)
        r.measured["reannounced_after_restart_s"] = back if back is not None else -1.0
        r.marks += mark("vgw-fwd restarted (traffic over)", restart_at) + mark(
            "both announced", None if back is None else restart_at + back
        )
        r.passed = r.passed and back is not None
        return r

    def node_isolate(self) -> Result:
        self.say("scenario node-isolate: vgwctl node isolate node-a, then restore, under steady traffic")
        t = self._traffic("node-isolate")
        time.sleep(self.pace.lead_s)
        fault, t_isolate = now(), time.monotonic()
        out = self.lab.vgwctl("node", "isolate", "node-a", "--reason", "lab scenario node-isolate")
        try:
            moved = _wait(lambda: self.lab.router_next_hops() == {self.ext["b"]}, 15, since=t_isolate)
            time.sleep(self.pace.watch_s)
        finally:
            restore_at, t_restore = now(), time.monotonic()
            self.lab.vgwctl("node", "restore", "node-a", "--reason", "lab scenario node-isolate done")
        back = _wait(self._both_announced, 20, since=t_restore)
        time.sleep(self.pace.tail_s)
        recs = t.finish()
        s = summarize(recs, fault)
        r = Result("node-isolate", s, {"withdrawn_after_s": moved if moved is not None else -1.0,
                                       "restored_after_s": back if back is not None else -1.0},
                   "zero failed requests", fault_at=fault)  # fmt: skip
        r.passed = out.returncode == 0 and moved is not None and back is not None and s["failed"] == 0
        r.timeline = requests_timeline(recs)
        r.marks = (mark("isolate node-a", fault, "fault") + mark("withdrawn", None if moved is None else fault + moved)
                   + mark("restore node-a", restore_at)
                   + mark("both announced", None if back is None else restore_at + back, "recovery"))  # fmt: skip
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
        new_backend = f"backend-{SPARE_BACKEND[0]}"
        t = self._traffic("config-change")
        time.sleep(self.pace.lead_s)
        fault = now()
        out = self.lab.vgwctl("apply", "-f", str(changed), "--reason", "lab scenario config-change: add a backend")
        try:
            # the new backend rises (its health check) and takes requests: watch it serve a while
            _wait(lambda: any(x.get("backend") == new_backend for x in t.results()), 15, 0.2)
            time.sleep(self.pace.watch_s)
            recs = t.finish()
            s = summarize(recs, fault)
        finally:
            self.lab.vgwctl("apply", "-f", str(EXAMPLE), "--reason", "lab scenario config-change: back to the example")
        served = int(s["spread"].get(new_backend, 0))  # type: ignore[attr-defined]
        r = Result("config-change", s, {"requests_to_new_backend": float(served)}, "zero failed requests",
                   fault_at=fault)  # fmt: skip
        r.passed = out.returncode == 0 and s["failed"] == 0 and served > 0
        first = next((float(str(x["t"])) for x in recs if x["ok"] and x.get("backend") == new_backend), None)
        r.timeline = requests_timeline(recs)
        r.marks = mark(f"vgwctl apply: + {SPARE_BACKEND[1]}", fault, "fault")
        r.marks += mark(f"first request to {new_backend}", first, "recovery")
        if out.returncode != 0:
            r.notes.append(f"vgwctl apply: {out.stderr.strip()[:200]}")
        return r

    def monitor_blackhole(self) -> Result:
        self.say("scenario monitor-blackhole: node-a's link silently drops the VIP's traffic (nftables at its port)")
        p = self.lab.plan
        port = p.node_ext("a") + "p"
        t = self._traffic("monitor-blackhole")
        time.sleep(self.pace.lead_s)
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
            time.sleep(self.pace.watch_s)
        finally:
            t_repair = time.monotonic()
            self._unblackhole()
        back = _wait(self._both_announced, 40, since=t_repair)
        repair_at = fault + (t_repair - t_fault)
        time.sleep(self.pace.tail_s)
        recs = t.finish()
        s = summarize(recs, fault)
        r = Result("monitor-blackhole", s, {
            "withdrawn_after_s": moved if moved is not None else -1.0,
            "restored_after_repair_s": back if back is not None else -1.0,
            "recovered_after_s": float(s["recovered_after_s"]),  # type: ignore[arg-type]
        }, f"the monitor names node-a, routectl withdraws it within {BLACKHOLE_BOUND_S:g} s, clients recover; "
           "back after the hold-down", fault_at=fault)  # fmt: skip
        r.passed = moved is not None and moved <= BLACKHOLE_BOUND_S and back is not None
        r.deadline_s = BLACKHOLE_BOUND_S
        r.timeline = requests_timeline(recs)
        r.marks = (mark("blackhole on node-a's link", fault, "fault") + _recovery(s, fault)
                   + mark("node-a withdrawn", None if moved is None else fault + moved) + mark("repaired", repair_at)
                   + mark("both announced", None if back is None else repair_at + back))  # fmt: skip
        return r

    def syn_flood(self) -> Result:
        p, st = self.lab.plan, self.lab.state
        assert st is not None
        rate = "the highest rate this machine can send" if not self.flood_pps else f"{self.flood_pps:.0f} pps"
        self.say(f"scenario syn-flood: spoofed SYNs from {FLOOD_SOURCES} to {VIP}:80 at {rate} for "
                 f"{self.flood_s:g} s, under steady traffic")  # fmt: skip
        mode = _syn_proxy_mode()
        self.say(f"  {SERVICE}'s syn_proxy: {mode}")
        if not FLOOD_BIN.exists():
            raise LabError(f"{FLOOD_BIN} missing (make setup builds it)")
        before_s, after_s = self.pace.lead_s + 1.0, 2 * self.pace.watch_s
        t = self._traffic("syn-flood", before_s + self.flood_s + after_s)
        base = sample(st.sockets)
        time.sleep(before_s)
        flood = self._flood = Flood(p, self.workdir, self.flood_s, self.flood_pps)
        at_start = sample(st.sockets)
        flood_at = now()
        flood.start(self.lab._env())
        peak: dict[str, float] = {}
        proxy_seen: dict[str, float] = {}
        while flood.running() and now() - flood_at < self.flood_s + 10:
            cur = sample(st.sockets)
            for key in ("conn_active", "conn_halfopen", "svc_conn_active"):
                peak[key] = max(peak.get(key, 0.0), cur.get(key))
            for n, v in cur.syn_proxy_active.items():
                proxy_seen[n] = max(proxy_seen.get(n, 0.0), v)
            time.sleep(0.5)
        gen = flood.wait()
        flood_end = now()
        at_end = sample(st.sockets)
        recs = t.wait()
        # Leave the lab as we found it: half-open entries of the flood expire with SYN_RECV's timeout.
        drained = _wait(lambda: sample(st.sockets).get("conn_active") <= base.get("conn_active") + 100, 60, 0.5)
        s = summarize(recs, flood_at)
        phases = {
            "before": phase(recs, None, flood_at),
            "during": phase(recs, flood_at, flood_end),
            "after": phase(recs, flood_end, None),
        }
        secs = max(float(gen.get("duration_s", 0.0)), 1e-3)
        delta = {k: at_end.get(k) - at_start.get(k) for k in at_end.values}
        fwd: dict[str, Any] = {
            "rx_pps_during": round(delta.get("ext_rx_packets", 0.0) / secs),
            "rx_missed_during": delta.get("ext_nic_rx_missed", 0.0),
            "conn_table_before": base.get("conn_active"),
            "conn_table_peak": peak.get("conn_active", 0.0),
            "halfopen_peak": peak.get("conn_halfopen", 0.0),
            "service_conn_peak": peak.get("svc_conn_active", 0.0),
            "syn_cookies_sent": delta.get("syn_cookie_sent", 0.0),
            "syn_cookies_ok": delta.get("syn_cookie_ok", 0.0),
            "syn_cookies_bad": delta.get("syn_cookie_bad", 0.0),
            "conn_new": delta.get("conn_new", 0.0),
            "conn_evicted": delta.get("conn_evicted", 0.0),
            "drop_conn_table_full": delta.get("drop_conn_table_full", 0.0),
            "drop_no_lport": delta.get("drop_no_lport", 0.0),
            "syn_proxy_active": proxy_seen or "not reported",
            "answered": sorted(set(at_start.answered) & set(at_end.answered)),
            "table_drained_after_s": drained if drained is not None else -1.0,
        }
        s.update(syn_proxy=mode, phases=phases, flood=gen, forwarders=fwd)
        during = phases["during"]
        ok = float(during["ok_ratio"])  # type: ignore[arg-type]
        r = Result("syn-flood", s, {
            "flood_pps": float(gen.get("pps", 0.0)),
            "during_ok_pct": round(100 * ok, 2),
            "during_p99_ms": float(during["p99_ms"]),  # type: ignore[arg-type]
            "after_ok_pct": round(100 * float(phases["after"]["ok_ratio"]), 2),  # type: ignore[arg-type]
            "conn_table_peak": fwd["conn_table_peak"],
            "syn_cookies_sent": fwd["syn_cookies_sent"],
        }, f">= {100 * SYN_FLOOD_MIN_OK:g}% of legitimate requests succeed during the flood",
            fault_at=flood_at)  # fmt: skip
        ran = int(gen.get("sent", 0)) > 0 and int(during["sent"]) > 0  # type: ignore[call-overload]
        r.passed = ran and ok >= SYN_FLOOD_MIN_OK
        r.timeline = requests_timeline(recs)
        r.marks = mark("flood starts", flood_at, "fault") + mark("flood over", flood_end, "recovery")
        r.windows = [Window(label="SYN flood", start=flood_at, end=flood_end)]
        if not ran:
            r.notes.append(f"the flood did not run: {gen.get('error', gen)}")
        r.notes.append(_flood_note(gen, fwd))
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
        if self._flood is not None:
            self._flood.stop()
        self._unblackhole()
        if not _pids(p.backend(1), "backend-1"):
            self._start_backend(1)
        if not _pids(p.node("a"), "vgw-fwd"):
            self.lab.start_forwarder("a")
        if _wait(self._both_announced, 60) is None:
            self.say("  warning: the lab did not recover both announcements after the scenario")

    # syn-flood last: without a SYN proxy it leaves the connection tables full for SYN_RECV's timeout
    ALL = ("backend-failure", "node-failure", "node-isolate", "config-change", "monitor-blackhole", "syn-flood")

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
            "syn-flood": self.syn_flood,
        }[name]()


def _last_failure(s: dict[str, object], fault: float, kind: MarkKind) -> list[Mark]:
    """The end of the last request that failed around the fault (summarize's recovery), if one did."""
    if int(str(s["failed"])) - int(str(s["failed_before_fault"])) == 0:
        return []
    return mark("last failure ends", fault + float(str(s["recovered_after_s"])), kind)


def _recovery(s: dict[str, object], fault: float) -> list[Mark]:
    """The clients' recovery: the last failure's end, or the fault itself when none failed."""
    return _last_failure(s, fault, "recovery") or mark("no request failed", fault, "recovery")


def _syn_proxy_mode() -> str:
    """How www-http is protected in the lab's configuration: its effective ``syn_proxy`` setting
    (the service's, else its VIP's, else the default: auto for TCP) and auto's thresholds."""
    from vgw.config.model import service_protection
    from vgw.config.validate import load_document

    try:
        doc = load_document(EXAMPLE.read_text())
    except Exception as exc:  # a report detail: never the reason a scenario fails
        return f"unknown ({exc!s:.80})"
    for vip in doc.vips:
        for svc in vip.services:
            if svc.name == SERVICE:
                p = service_protection(vip, svc)
                if p.syn_proxy != "auto":
                    return p.syn_proxy
                return f"auto: on above {p.auto_half_open} half-open entries or {p.auto_syn_rate} SYN/s per node"
    return "unknown"


def _flood_note(gen: dict[str, Any], fwd: dict[str, Any]) -> str:
    sent, pps = int(gen.get("sent", 0)), float(gen.get("pps", 0.0))
    drained = fwd["table_drained_after_s"]
    return (
        f"flood {sent} SYNs at {pps:.0f} pps, the forwarders took in {fwd['rx_pps_during']} pps; "
        f"table {fwd['conn_table_before']:.0f} -> peak {fwd['conn_table_peak']:.0f} entries "
        f"(half-open peak {fwd['halfopen_peak']:.0f}), back to normal "
        + (f"{drained} s after the traffic" if drained >= 0 else "NOT within 60 s")
        + f"; cookies sent {fwd['syn_cookies_sent']:.0f}, validated {fwd['syn_cookies_ok']:.0f}; "
        f"table-full drops {fwd['drop_conn_table_full']:.0f}; syn_proxy_active {fwd['syn_proxy_active']}"
    )
