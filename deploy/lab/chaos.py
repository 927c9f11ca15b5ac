"""The chaos suite: one fault at a time in the lab, under steady client traffic, and what each did.

Faults: kill -9 (then start again) NATS, the config service, the health checker, the monitor, each
node's shim, route control and forwarder; pause a process with SIGSTOP for longer than its heartbeat;
cut a node's management link (its shim and route control lose NATS) -- each for ``hold_s``, then
restored. For each fault the report gives:

* client requests sent and failed (requests started from just before the fault to the end of the
  window, which lasts until everything is back and settled);
* route changes at the router (its kernel FIB for the VIP, sampled every 50 ms) and the
  ``vip.withdraw`` / ``vip.announce`` events route control published;
* ``backend.down`` / ``backend.up`` events (every backend is healthy throughout: any is spurious);
* whether the committed config (revision and document) is intact afterwards.

Bounds (asserted by ``vgwctl lab chaos`` and tests/lab/test_chaos.py): a fault of one control-plane
process causes no failed request, no route change, no withdraw and no backend event; a forwarder
kill moves the traffic to the other node within 3 s (the last failed request ends within 3 s of the
kill) and the node is announced again once its forwarder is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from vgw.bus import EVENT_STREAM, Bus, Received

from . import mgmtlink
from .lab import Lab, LabError
from .plan import NODES
from .traffic import Traffic

Action = Literal["kill", "pause", "cut"]

PAST_HEARTBEAT_S = 4.5
"""How long a management link cut lasts: past route control's heartbeat bound (3 s), with margin."""

FORWARDER_MOVE_BOUND_S = 3.0
"""A forwarder kill: the last failed request ends within this many seconds of the kill."""

VIEWS_BOUND_S = 15.0
"""After the lab settled: both nodes are fresh again in the live views (``vgwctl top`` and ``bgp``
read memory buckets, which a NATS restart loses and their writers create again)."""

TRAFFIC_FRESH_S = 5.0
"""A node's traffic entry older than this is stale (its shim writes one every second or so)."""


# The live views the chaos suite checks after recovery: the vgwctl arguments, and when one node's
# entry is fresh. The BGP view says itself when an entry is stale (routectl writes every 5 s).
_VIEW_FRESHNESS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], bool]]] = {
    "top": (("top", "--no-backends"), lambda n: float(n.get("age_s", 1e9)) <= TRAFFIC_FRESH_S),
    "bgp": (("bgp",), lambda n: not n.get("stale", True)),
}


@dataclass(frozen=True)
class Fault:
    target: str  # a lab part: nats, config, healthcheck, monitor, shim-a, routectl-a, fwd-a, node-a (cut)
    action: Action
    hold_s: float = 3.0
    during: str | None = None  # killed first and kept down through the fault (e.g. nats)

    @property
    def name(self) -> str:
        verb = {"kill": "kill -9", "pause": "SIGSTOP", "cut": "cut the management link of"}[self.action]
        while_ = f" while {self.during} is down" if self.during else ""
        return f"{verb} {self.target}{while_}"

    @property
    def forwarder(self) -> bool:
        return self.target.startswith("fwd-")


def all_faults() -> list[Fault]:
    nodes = list(NODES)
    kills = ["nats", "config", "healthcheck", "monitor"]
    kills += [f"{role}-{n}" for role in ("shim", "routectl") for n in nodes]
    out = [Fault(t, "kill") for t in kills]
    # longer than the heartbeat bound route control applies (dataplane_stale_s, 3 s) and the
    # monitor's lease (5 s)
    out += [Fault(t, "pause", hold_s=6.0) for t in ("shim-a", "routectl-a", "healthcheck", "monitor")]
    out += [Fault(f"node-{n}", "cut", hold_s=PAST_HEARTBEAT_S) for n in nodes[:1]]
    out += [Fault(f"fwd-{n}", "kill") for n in nodes]
    # route control's local truth: a forwarder that dies while the bus is down is withdrawn all the same
    out.append(Fault(f"fwd-{nodes[0]}", "kill", during="nats"))
    return out


SHORT = (
    "kill -9 shim-a",
    "kill -9 routectl-a",
    "cut the management link of node-a",
    "kill -9 fwd-a while nats is down",
)
"""The faults ``make test`` runs (tests/lab/test_chaos.py); ``make chaos`` runs every one."""


def faults_named(names: tuple[str, ...] | list[str]) -> list[Fault]:
    by_name = {f.name: f for f in all_faults()}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; known: {', '.join(by_name)}")
    return [by_name[n] for n in names]


@dataclass
class FaultResult:
    fault: str
    kind: str  # control | forwarder
    sent: int = 0
    failed: int = 0
    last_failure_s: float | None = None  # after the fault: when the last failed request ended
    moved_s: float | None = None  # a forwarder fault: when the router stopped using the node
    route_changes: int = 0
    router_hops: list[list[Any]] = field(default_factory=list)  # [seconds after the fault, hops]
    withdraws: int = 0
    announces: int = 0
    backend_events: int = 0
    config_intact: bool = True
    recovered_s: float | None = None  # after the restore: everything back (announced, ready)
    views: str = ""  # what the live views lacked VIEWS_BOUND_S after the lab settled ("": nothing)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def judge(self) -> None:
        p = self.problems
        if not self.config_intact:
            p.append("committed config changed")
        if self.backend_events:
            p.append(f"{self.backend_events} backend.up/down event(s): every backend was healthy")
        if self.recovered_s is None:
            p.append("did not recover (both nodes announced, every service ready) within the bound")
        if self.views:
            p.append(f"live views not fresh {VIEWS_BOUND_S:g}s after recovery: {self.views}")
        if self.kind == "control":
            if self.failed:
                p.append(f"{self.failed} failed request(s)")
            if self.route_changes:
                p.append(f"{self.route_changes} route change(s) at the router")
            if self.withdraws:
                p.append(f"{self.withdraws} vip.withdraw event(s)")
        else:
            if self.moved_s is None or self.moved_s > FORWARDER_MOVE_BOUND_S:
                moved = f"after {self.moved_s:.2f}s" if self.moved_s is not None else "never"
                p.append(f"the router stopped using the node {moved} (bound {FORWARDER_MOVE_BOUND_S:g}s)")
            if self.last_failure_s is not None and self.last_failure_s > FORWARDER_MOVE_BOUND_S:
                p.append(f"requests failed until {self.last_failure_s:.2f}s (bound {FORWARDER_MOVE_BOUND_S:g}s)")


class RouterSampler:
    """The router's next hops for the VIP, every 50 ms, in a thread; records each change."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.changes: list[tuple[float, frozenset[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RouterSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        last: frozenset[str] | None = None
        while not self._stop.is_set():
            hops = frozenset(self.lab.router_next_hops())
            if hops != last:
                self.changes.append((time.time(), hops))
                last = hops
            self._stop.wait(0.05)


class EventLog:
    """Every VGW event, from a subscription that replays the stream from its start and resumes after
    NATS restarts (in its own thread and loop): the events of a window can be read once the log has
    caught up with the stream."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.events: list[tuple[float, str, int]] = []  # (ce time, ce type, stream seq)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._bus: Bus | None = None
        self._lock = threading.Lock()

    def start(self, since: datetime) -> EventLog:
        self._thread.start()
        self._call(self._start(since), 30)
        return self

    async def _start(self, since: datetime) -> None:
        # Its reconnect attempts while NATS is killed are expected; the faults' own effects are judged.
        logging.getLogger("vgw.bus").setLevel(logging.CRITICAL)
        self._bus = Bus({**self.lab.nats_options("operator"), "reconnect_time_wait": 0.2}, source="/vgw/lab/chaos")
        await self._bus.connect()
        await self._bus.subscribe(self._on, subject="vgw.v1.>", since=since)

    async def _on(self, r: Received) -> None:
        t = r.meta.time.timestamp() if r.meta.time is not None else time.time()
        with self._lock:
            self.events.append((t, r.meta.type, r.stream_seq or 0))

    def caught_up(self, timeout_s: float = 30.0) -> bool:
        """Wait until every event stored now has been received."""

        async def last_seq() -> int:
            assert self._bus is not None
            return int((await self._bus.js.stream_info(EVENT_STREAM)).state.last_seq)

        target = self._call(last_seq(), 15)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if max((s for *_, s in self.events), default=0) >= target:
                    return True
            time.sleep(0.05)
        return False

    def between(self, t0: float, t1: float) -> list[tuple[float, str]]:
        with self._lock:
            return [(t, kind) for t, kind, _ in self.events if t0 <= t <= t1]

    def stop(self) -> None:
        if self._bus is not None:
            self._call(self._bus.close(), 10)
        self._call(_cancel_others(), 10)  # nats-py's JetStream helpers outlive the connection
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro: Any, timeout_s: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)


async def _cancel_others() -> None:
    me = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not me]
    for t in others:
        t.cancel()
    await asyncio.gather(*others, return_exceptions=True)


class Chaos:
    def __init__(self, lab: Lab, say: Callable[[str], None] = print, rate: float = 20.0) -> None:
        self.lab = lab
        self.say = say
        self.rate = rate
        assert lab.state is not None
        self.workdir = Path(lab.state.workdir)
        self.ext = {n: addr for n, (_id, addr) in NODES.items()}

    # -- the run --

    def run(self, faults: list[Fault]) -> list[FaultResult]:
        results = []
        log = EventLog(self.lab).start(datetime.now(UTC))
        try:
            for i, f in enumerate(faults, 1):
                self.say(f"[{i}/{len(faults)}] {f.name} for {f.hold_s:g}s")
                r = self._one(f, log)
                results.append(r)
                self.say(f"      {'PASS' if r.passed else 'FAIL'}: {_summary(r)}")
        finally:
            log.stop()
        return results

    def _one(self, f: Fault, log: EventLog) -> FaultResult:
        r = FaultResult(f.name, "forwarder" if f.forwarder else "control")
        if self._settle(60) is None:
            raise LabError(f"the lab is not healthy before {f.name}: {self._unhealthy()}")
        before = self._config()
        lead_s = 1.5
        traffic = Traffic(self.lab.plan.client, self.workdir / f"chaos-{_slug(f.name)}.jsonl",
                          rate=self.rate, duration_s=lead_s + f.hold_s + 60)  # fmt: skip
        traffic.start(self.lab._env())
        sampler = RouterSampler(self.lab).start()
        try:
            time.sleep(lead_s)  # steady traffic before the fault: the baseline the window is judged on
            t_fault = time.time()
            self._inject(f)
            time.sleep(f.hold_s)  # the fault lasts this long
            t_restore = time.monotonic()
            self._restore(f)
            settled = self._settle(60)
            r.recovered_s = round(time.monotonic() - t_restore, 2) if settled is not None else None
            if settled is not None:
                r.views = self._views_fresh(VIEWS_BOUND_S)
            time.sleep(1.0)  # requests started just before "settled" finish (the client timeout is 2 s)
            t_end = time.time()
        finally:
            traffic.stop()
            sampler.stop()
        self._judge_traffic(r, traffic.results(), t_fault, t_end)
        hops = sampler.changes
        r.router_hops = [[round(t - t_fault, 2), sorted(h)] for t, h in hops]
        r.route_changes = max(0, len(hops) - 1)
        if f.forwarder:
            gone = self.ext[f.target.removeprefix("fwd-")]
            r.moved_s = next((round(t - t_fault, 2) for t, h in hops if t >= t_fault and gone not in h), None)
        if not log.caught_up():
            r.problems.append("the event log did not catch up with the stream")
        events = log.between(t_fault - 0.5, t_end)
        r.withdraws = sum(1 for _, k in events if k.endswith(".vip.withdraw.v1"))
        r.announces = sum(1 for _, k in events if k.endswith(".vip.announce.v1"))
        r.backend_events = sum(1 for _, k in events if k.endswith((".backend.down.v1", ".backend.up.v1")))
        r.config_intact = self._config() == before
        r.judge()
        return r

    def _judge_traffic(self, r: FaultResult, recs: list[dict[str, Any]], t_fault: float, t_end: float) -> None:
        window = [x for x in recs if t_fault - 0.5 <= float(x["t"]) <= t_end]
        failed = [x for x in window if not x["ok"]]
        r.sent, r.failed = len(window), len(failed)
        if failed:
            r.last_failure_s = round(max(float(x["t"]) + float(x["ms"]) / 1000 for x in failed) - t_fault, 2)

    # -- faults --

    def _inject(self, f: Fault) -> None:
        if f.during is not None:
            self._kill(f.during)
        if f.action == "cut":
            mgmtlink.cut(self.lab, f.target.removeprefix("node-"))
            return
        if f.action == "kill":
            self._kill(f.target)
            return
        pids = self.lab.pids(f.target)
        if not pids:
            raise LabError(f"{f.target}: no process to pause")
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)

    def _kill(self, target: str) -> None:
        pids = self.lab.pids(target)
        if not pids:
            raise LabError(f"{target}: no process to kill")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.lab.pids(target) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _restore(self, f: Fault) -> None:
        self._start_again(f)
        if f.during is not None:
            self._start_again(Fault(f.during, "kill"))

    def _start_again(self, f: Fault) -> None:
        if f.action == "cut":
            mgmtlink.restore(self.lab, f.target.removeprefix("node-"))
        elif f.action == "pause":
            for pid in self.lab.pids(f.target):
                os.kill(pid, signal.SIGCONT)
        elif f.target.startswith("fwd-"):
            self.lab.start_forwarder(f.target.removeprefix("fwd-"), render=False)
        elif f.target == "nats":
            self.lab.restart_nats()
        else:
            self.lab.restart_service(f.target)

    # -- health of the lab --

    def _settle(self, timeout_s: float) -> float | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if not self._unhealthy():
                return time.monotonic() - t0
            time.sleep(0.1)
        return None

    def _unhealthy(self) -> str:
        if self.lab.router_next_hops() != set(self.ext.values()):
            return f"router next hops {sorted(self.lab.router_next_hops())}"
        assert self.lab.state is not None
        for name, port in self.lab.state.metrics.items():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                    if resp.status != 200:
                        return f"{name} not ready"
            except Exception as exc:
                return f"{name} not ready ({exc})"
        return ""

    def _views_fresh(self, timeout_s: float) -> str:
        """'' once both nodes have fresh entries in the traffic and BGP views; else what was missing
        at the end of ``timeout_s``."""
        want = {node_id for node_id, _addr in NODES.values()}
        deadline = time.monotonic() + timeout_s
        while True:
            missing = []
            for view, (args, is_fresh) in _VIEW_FRESHNESS.items():
                out = self.lab.vgwctl("-o", "json", *args)
                try:
                    nodes = json.loads(out.stdout)["nodes"] if out.returncode == 0 else []
                except (ValueError, KeyError):
                    nodes = []
                fresh = {n.get("node") for n in nodes if is_fresh(n)}
                if want - fresh:
                    missing.append(f"{view}: {sorted(want - fresh)}")
            if not missing or time.monotonic() >= deadline:
                return "; ".join(missing)
            time.sleep(1.0)

    def _config(self) -> tuple[str, str]:
        """The committed config as the config service serves it: (status, whole document)."""
        status = self.lab.vgwctl("-o", "json", "status")
        doc = self.lab.vgwctl("-o", "json", "get", "config")
        if status.returncode != 0 or doc.returncode != 0:
            raise LabError(f"reading the config: {status.stderr or doc.stderr}")
        return json.loads(status.stdout).get("revision"), doc.stdout


def table(results: list[FaultResult]) -> str:
    head = f"{'fault':<44} {'kind':<9} {'sent':>5} {'failed':>6} {'last fail':>9} {'moved':>6} {'routes':>6} " \
           f"{'withdraw':>8} {'backend ev':>10} {'config':>6} {'back in':>7}  verdict"  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in results:
        last = f"{r.last_failure_s:.2f}s" if r.last_failure_s is not None else "-"
        back = f"{r.recovered_s:.1f}s" if r.recovered_s is not None else "never"
        moved = f"{r.moved_s:.2f}s" if r.moved_s is not None else "-"
        verdict = "PASS" if r.passed else "FAIL: " + "; ".join(r.problems)
        lines.append(
            f"{r.fault:<44} {r.kind:<9} {r.sent:>5} {r.failed:>6} {last:>9} {moved:>6} {r.route_changes:>6} "
            f"{r.withdraws:>8} {r.backend_events:>10} {'intact' if r.config_intact else 'CHANGED':>6} {back:>7}  "
            f"{verdict}"
        )
    return "\n".join(lines)


def json_lines(results: list[FaultResult]) -> str:
    return "\n".join(json.dumps({"case": f"chaos {r.fault}", "passed": r.passed, **asdict(r)}) for r in results)


def _summary(r: FaultResult) -> str:
    parts = [f"{r.failed}/{r.sent} failed", f"{r.route_changes} route change(s)", f"{r.withdraws} withdraw(s)"]
    if r.moved_s is not None:
        parts.append(f"moved after {r.moved_s:.2f}s")
    if r.last_failure_s is not None:
        parts.append(f"last failure {r.last_failure_s:.2f}s after the fault")
    parts.append(f"back in {r.recovered_s}s" if r.recovered_s is not None else "not back")
    return ", ".join(parts) + ("" if r.passed else " -- " + "; ".join(r.problems))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")
