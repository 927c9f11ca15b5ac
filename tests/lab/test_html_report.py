"""The lab report as a page (issue #17, item 6): ``vgwctl lab demo|scenario --html FILE``.

The data comes from the lab's own clients, run for real on loopback: traffic.py's request script
against an HTTP server that is stopped and started again (the backend failure, in small), and
echoclient.py's long-lived connections to an echo server that stalls some and resets others; the
trace is written by VGW's span-file exporter from one provider per service, with the W3C context
carried from one to the next as NATS headers carry it, and read back by traces.py (the real
backend-failure scenario's page is checked by tests/lab/test_lab_e2e.py, on its lab). Each page is
loaded in a real headless Chromium (Debian's ``chromium``, driven by Playwright): no console or page
error, no request leaves the page, every chart drawn with its bars and marks, the waterfall a bar
per span, and a screenshot.
"""

from __future__ import annotations

import http.server
import json
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from deploy.lab import htmlreport, traffic
from deploy.lab.cli import html_on_the_way_out
from deploy.lab.lab import REPO, Lab, LabError
from deploy.lab.longlived import NAMES as LONGLIVED
from deploy.lab.plan import BACKENDS, VIP
from deploy.lab.scenarios import Result, _recovery
from deploy.lab.timeline import Window, connections_timeline, mark, requests_timeline
from deploy.lab.traces import FoundTrace, backend_down_trace, load
from tests.lab.browser import Loaded, drawn, screenshot_ok
from vgw.telemetry.tracing import JsonLinesFileExporter


def wait_for(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the browser ------------------------------------------------------------------------------------


# -- data, made by the lab's own clients -------------------------------------------------------------


class Backend:
    """A loopback HTTP server answering as a backend does (its name), to stop and start again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> Backend:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"backend-1\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_a: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def requests_run(tmp: Path) -> Result:
    """traffic.py's client script, for real, against a backend that dies and comes back: a Result as
    Scenarios.backend_failure builds it."""
    port = free_port()
    backend = Backend(port).start()
    out = tmp / "traffic.jsonl"
    try:
        with out.open("wb") as f:
            proc = subprocess.Popen(
                [sys.executable, "-c", traffic.SCRIPT, f"http://127.0.0.1:{port}/", "20", "5", "1"], stdout=f
            )
        try:
            wait_for(lambda: sum(r["ok"] for r in lines(out)) >= 20, 10, "20 requests served")
            fault = traffic.now()
            backend.stop()
            wait_for(lambda: sum(not r["ok"] for r in lines(out)) >= 12, 10, "12 requests refused")
            restarted = traffic.now()
            backend.start()
            proc.wait(15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        backend.stop()
    recs = traffic.Traffic("-", out).results()
    s = traffic.summarize(recs, fault)
    recovered = float(s["recovered_after_s"])  # type: ignore[arg-type]
    r = Result("backend-failure", s, {"recovered_after_s": recovered}, "recovery <= fall x interval + 1 s = 3.0 s",
               fault_at=fault, deadline_s=3.0)  # fmt: skip
    r.passed = recovered <= 3.0
    r.timeline = requests_timeline(recs)
    r.marks = mark("backend-1 killed", fault, "fault") + _recovery(s, fault) + mark("backend-1 restarted", restarted)
    r.notes.append("failures are connections <refused> while the backend was down")  # escaped, or it is a tag
    return r


class EchoServer:
    """The backends' echo (servers.py) on loopback, with a banner naming a LIP per connection, that
    can stall (stop echoing for a while) and reset every fifth connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.paused = threading.Event()
        self.reset = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _peer = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c, len(self.conns)), daemon=True).start()

    def _serve(self, c: socket.socket, n: int) -> None:
        lip = "198.51.100.101" if n % 2 else "198.51.100.102"
        try:
            c.sendall(f"vgw-echo backend-{n % 3 + 1} {lip}:{40000 + n}\n".encode())
            while True:
                if self.reset.is_set() and n % 5 == 0:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    c.close()  # linger 0: a reset, as a forwarder without the connection's state answers
                    return
                if self.paused.is_set():
                    time.sleep(0.01)
                    continue
                c.settimeout(0.05)
                try:
                    data = c.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                c.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def longlived_run(tmp: Path) -> Result:
    """echoclient.py, for real, through a stall of every connection and the reset of a fifth of
    them: a Result as LongLived._result builds it (the fields the report reads)."""
    server = EchoServer()
    out = tmp / "echo.jsonl"
    conns = 20
    try:
        with out.open("wb") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "deploy.lab.echoclient", "--vip", "127.0.0.1", "--port", str(server.port),
                 "--conns", str(conns), "--duration", "6", "--interval-ms", "20", "--ramp-s", "0.2",
                 "--stall-timeout", "5"], stdout=f, cwd=REPO,
            )  # fmt: skip
        try:

            def ticks() -> list[dict[str, Any]]:
                return [r for r in lines(out) if r.get("event") == "tick"]

            wait_for(lambda: len(ticks()) >= 3, 15, "three ticks of open connections")
            fault = time.time()
            server.paused.set()
            wait_for(lambda: any(t["stalled"] > 0 for t in ticks()), 10, "stalled connections")
            server.reset.set()
            server.paused.clear()
            flowing = time.time()
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        server.close()
    recs = lines(out)
    opened = [r for r in recs if r.get("event") == "conn" and r["opened"]]
    broken = [r for r in opened if r["broken"]]
    summary: dict[str, object] = {
        "sent": len(opened), "failed": len(broken), "connections": conns, "opened": len(opened),
        "broken": len(broken), "survived_pct": round(100 * (len(opened) - len(broken)) / len(opened), 2),
        "broken_reasons": {"reset": len(broken)}, "split": {"by_banner": {"node-a": 10, "node-b": 10}},
        "max_gap_ms": max(float(r["max_gap_ms"]) for r in opened),
    }  # fmt: skip
    r = Result("ll-node-failure", summary, {"broken": float(len(broken)), "flowing_after_s": 1.2},
               ">= 99% survive (connection sync on)", passed=False, fault_at=fault)  # fmt: skip
    r.timeline = connections_timeline(recs, len(opened))
    r.marks = mark("kill -9 node-a's vgw-fwd", fault, "fault") + mark("all flowing", flowing, "recovery")
    r.windows = [Window(label="forwarding gap", start=fault, end=flowing)]
    return r


# process (its span file, as the lab names them) -> service.name (vgw.runtime.run's name)
PROCESSES = {"healthcheck": "healthcheck", "routectl-a": "routectl", "routectl-b": "routectl", "shim-a": "shim",
             "shim-b": "shim"}  # fmt: skip


def trace_files(trace_dir: Path) -> list[str]:
    """One backend-down trace across services, written as the lab's services write theirs: one
    provider and span file per process (VGW_TRACE_FILE), the context carried in message headers.
    Returns the span names in the order they were made."""
    trace_dir.mkdir()
    providers = {}
    for proc, svc in PROCESSES.items():
        p = TracerProvider(resource=Resource.create({"service.name": svc, "service.instance.id": proc}))
        p.add_span_processor(SimpleSpanProcessor(JsonLinesFileExporter(str(trace_dir / f"{proc}.jsonl"))))
        providers[proc] = p
    made = []

    def span(svc: str, name: str, headers: dict[str, str] | None, attrs: dict[str, Any]) -> dict[str, str]:
        ctx = propagate.extract(headers) if headers is not None else None
        with providers[svc].get_tracer("vgw").start_as_current_span(name, context=ctx, attributes=attrs):
            time.sleep(0.002)  # a span takes time
            out: dict[str, str] = {}
            propagate.inject(out)
            made.append(name)
            return out

    down = span("healthcheck", "healthcheck transition", None,
                {"vgw.backend": f"{BACKENDS[1]}:8080", "vgw.state": "down", "vgw.check": "web-http"})  # fmt: skip
    sent = span("healthcheck", "send vgw.v1.backend.down", down, {"messaging.system": "nats"})
    for n in ("a", "b"):
        node = f"node-{n}"
        got = span(f"routectl-{n}", "process vgw.v1.backend.down", sent, {"vgw.node": node})
        span(f"routectl-{n}", "routectl decide", got, {"vgw.node": node, "vgw.route.state": "announced"})
        got = span(f"shim-{n}", "process vgw.v1.backend.down", sent, {"vgw.node": node})
        span(f"shim-{n}", "apply forwarder state", got, {"vgw.node": node, "vgw.apply.mode": "delta"})
    # another trace in the same files: the report shows only the one of the transition
    span("healthcheck", "healthcheck transition", None, {"vgw.backend": f"{BACKENDS[2]}:8080", "vgw.state": "up"})
    for p in providers.values():
        p.shutdown()
    return made


# -- the tests --------------------------------------------------------------------------------------


def test_requests_timeline_buckets_every_request_by_its_start() -> None:
    recs: list[dict[str, object]] = [{"t": 100.0 + i * 0.05, "ok": not 40 <= i < 50} for i in range(100)]
    tl = requests_timeline(recs)
    assert tl is not None and tl["step_s"] == 0.1 and tl["start"] == 100.0
    assert len(tl["ok"]) == 50 and sum(tl["ok"]) == 90 and sum(tl["failed"]) == 10
    assert [i for i, n in enumerate(tl["failed"]) if n] == [20, 21, 22, 23, 24]  # 2.0 s to 2.5 s after the start
    assert requests_timeline([]) is None
    assert connections_timeline([{"event": "ready"}], 5) is None


def test_the_page_shows_each_scenario_and_the_trace(tmp_path: Path, open_page: Callable[[Path], Loaded]) -> None:
    requests = requests_run(tmp_path)
    longlived = longlived_run(tmp_path)
    assert requests.summary["failed"] and requests.timeline is not None, requests  # the fault showed
    tl = longlived.timeline
    assert tl is not None and tl["kind"] == "connections" and any(t[2] for t in tl["ticks"]), longlived  # stalls
    flood = Result("syn-flood", {"sent": 1, "failed": 0}, {}, ">= 99% of legitimate requests succeed",
                   fault_at=requests.fault_at, timeline=requests.timeline)  # fmt: skip
    flood_end = flood.fault_at + 1.0
    flood.marks = mark("flood starts", flood.fault_at, "fault") + mark("flood over", flood_end, "recovery")
    flood.windows = [Window(label="SYN flood", start=flood.fault_at, end=flood_end)]
    # as LongLived.node_drain reports a drain it could not start: no clients, no timeline
    drain = Result("ll-node-drain", {"sent": 0, "failed": 0, "spread": {}, "errors": [], "available": False}, {},
                   "0 broken", passed=False, notes=["not available: vgwctl node drain: unknown command"])  # fmt: skip
    made = trace_files(tmp_path / "traces")
    spans = backend_down_trace(load(tmp_path / "traces"), BACKENDS[1], requests.fault_at - 5)
    assert [s.name for s in spans] == made[:-1], "the trace of the transition to down, and only it"
    results = [requests, flood, longlived, drain]
    out = tmp_path / "report.html"
    page_html = htmlreport.render(results, FoundTrace(spans), htmlreport.Page("t1", VIP), longlived=LONGLIVED)
    htmlreport.write(out, page_html)
    # self-contained: nothing to fetch (the SVG namespace is a name, not a request)
    assert "https://" not in page_html and page_html.count("http://") == page_html.count("http://www.w3.org/2000/svg")

    got = open_page(out)
    page = got.page
    assert got.errors == [] and got.requests == [] and got.dialogs == [], got
    assert page.title() == "VGW lab report: t1"
    for r in (requests, flood, longlived):
        sec = f'section.scenario[data-name="{r.name}"]'
        assert drawn(page, f"{sec} svg.timeline") == 1, r.name
        assert drawn(page, f"{sec} rect.bar") >= 10, r.name
        assert drawn(page, f"{sec} .mark.fault line") == 1, r.name
        assert drawn(page, f"{sec} .mark.recovery line") == 1, r.name
        assert page.inner_text(f"{sec} .bound").startswith("Bound: "), r.name
    req = 'section.scenario[data-name="backend-failure"]'
    assert drawn(page, f"{req} rect.bar.failed") >= 3 and drawn(page, f"{req} rect.bar.ok") >= 10
    assert drawn(page, f"{req} rect.deadline") == 1  # the bound, 3 s from the fault
    assert page.inner_text(f"{req} .badge") == "PASS"
    assert "<refused>" in page.inner_text(f"{req} ul.notes")  # shown as text, not parsed as a tag
    assert drawn(page, 'section.scenario[data-name="syn-flood"] rect.window') == 1
    ll = 'section.scenario[data-name="ll-node-failure"]'
    assert drawn(page, f"{ll} rect.bar.stalled") >= 1 and drawn(page, f"{ll} rect.bar.broken") >= 1
    assert page.inner_text(f"{ll} .badge") == "FAIL"
    dr = 'section.scenario[data-name="ll-node-drain"]'
    assert page.query_selector(f"{dr} svg") is None
    assert "No timeline: not available" in page.inner_text(f"{dr} .missing")
    # the waterfall: a bar per span, each labelled with its service
    assert drawn(page, "svg.waterfall rect.span") == len(spans) == 10
    labels = page.text_content("svg.waterfall") or ""
    assert all(proc in labels for proc in PROCESSES), labels
    assert "apply forwarder state" in labels
    assert [a.inner_text() for a in page.query_selector_all("table.summary a")] == [r.name for r in results]
    screenshot_ok(page, tmp_path / "report.png")


def test_missing_data_and_hostile_text_make_a_page_that_says_so(
    tmp_path: Path, open_page: Callable[[Path], Loaded]
) -> None:
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    odd = Result(evil, {"sent": 0, "failed": 0, "errors": [evil]}, {"x": -1.0}, evil, passed=False, notes=[evil])
    out = tmp_path / "empty.html"
    htmlreport.write(out, htmlreport.render([odd], FoundTrace([], "no health transition found"),
                                            htmlreport.Page("t2", VIP, problem=evil)))  # fmt: skip
    got = open_page(out)
    page = got.page
    assert got.errors == [] and got.requests == [] and got.dialogs == [], got
    assert page.query_selector("script") is None and page.query_selector("main img") is None
    assert evil in page.inner_text("p.problem") and evil in page.inner_text("section.scenario .missing")
    assert "No trace: no health transition found" in page.inner_text("main")
    assert page.query_selector("svg") is None  # no chart without data, and no broken one

    htmlreport.write(out, htmlreport.render([], None, htmlreport.Page("t2", VIP, problem="LabError: up failed")))
    got = open_page(out)
    assert got.errors == [] and "No scenario produced a result." in got.page.inner_text("main")


def test_a_run_that_stops_with_an_error_still_writes_its_page(
    tmp_path: Path, open_page: Callable[[Path], Loaded]
) -> None:
    recs: list[dict[str, object]] = [{"t": 1000.0 + i / 20, "ok": True} for i in range(200)]
    done = Result("node-isolate", {"sent": 200, "failed": 0}, {}, "zero failed requests", fault_at=1004.0,
                  timeline=requests_timeline(recs), marks=mark("isolate node-a", 1004.0, "fault"))  # fmt: skip
    out, results = tmp_path / "stopped.html", [done]
    with pytest.raises(LabError), html_on_the_way_out(Lab("h" + secrets.token_hex(2)[:3]), out, results):
        raise LabError("config-change: vgwctl apply timed out")
    got = open_page(out)
    page = got.page
    assert got.errors == [] and got.requests == [], got
    assert "LabError: config-change: vgwctl apply timed out" in page.inner_text("p.problem")
    assert drawn(page, 'section.scenario[data-name="node-isolate"] rect.bar.ok') >= 50


@pytest.mark.parametrize("bad", ["/nonexistent-dir-vgw/report.html", "{tmp}", "{tmp}/missing/report.html"])
def test_bad_html_target_is_refused_before_anything_runs(tmp_path: Path, bad: str) -> None:
    """Checked before the lab is touched: `demo` would otherwise build a lab, run for minutes and
    only then fail to write its page."""
    lab_id = "h" + secrets.token_hex(2)[:3]
    target = bad.format(tmp=tmp_path)
    vgwctl = str(Path(sys.executable).with_name("vgwctl"))
    try:
        for cmd in (["demo"], ["scenario", "backend-failure"]):
            r = subprocess.run([vgwctl, "lab", "--id", lab_id, *cmd, "--html", target], capture_output=True,
                               text=True, timeout=60)  # fmt: skip
            assert r.returncode == 2, (cmd, r.returncode, r.stdout, r.stderr)
            assert r.stderr.startswith("vgwctl: --html: "), r.stderr
            assert not Path(f"/run/vgw-lab/{lab_id}.json").exists() and not Path(f"/tmp/vgw-lab-{lab_id}").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing written"
    finally:
        if Path(f"/run/vgw-lab/{lab_id}.json").exists():  # it ran after all: leave nothing behind
            subprocess.run([vgwctl, "lab", "--id", lab_id, "down"], capture_output=True, timeout=300, check=False)
