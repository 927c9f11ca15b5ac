"""``vgwctl lab ...`` behind the CLI: up, down, status, scenario, chaos, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import chaos, htmlreport
from .lab import Lab, LabError
from .longlived import GAP_BOUND_MS, GAP_GOAL_MS, LongLived
from .plan import BACKENDS, NODES, VIP
from .scenarios import Result, Scenarios
from .traces import FoundTrace, backend_down_trace, load, render


def say(msg: str) -> None:
    print(msg, flush=True)


def say_err(msg: str) -> None:
    """Progress while stdout carries JSON (``-o json``)."""
    print(msg, file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    html: Path | None = None
    if getattr(args, "html", None) is not None:  # checked before anything runs: a long run must end with its page
        try:
            html = htmlreport.target(args.html)
        except ValueError as exc:
            print(f"vgwctl: --html: {exc}", file=sys.stderr)
            return 2
    try:
        lab = Lab(
            args.id,
            progress=say_err if getattr(args, "output", "table") == "json" else say,
            insecure=getattr(args, "insecure", False),  # `up --insecure` / `demo --insecure`
            nats_cluster=getattr(args, "nats_cluster", 1),  # `up --nats-cluster N` / `demo --nats-cluster N`
        )
    except ValueError as exc:
        print(f"vgwctl: {exc}", file=sys.stderr)
        return 2
    cmd = args.lab_command
    try:
        if cmd == "up":
            lab.up()
            return 0
        if cmd == "down":
            res = lab.down()
            say(down_text(res))
            return 0
        if cmd == "demo":
            return demo(lab, args.keep, html)
        if cmd == "chaos":
            return chaos_cmd(lab, args)
        if lab.state is None:
            print(f"vgwctl: lab {args.id!r} is not up (vgwctl lab up)", file=sys.stderr)
            return 1
        if cmd == "status":
            return status(lab, args.output, args.watch)
        if cmd == "scenario":
            names = FAMILIES.get(args.name, (args.name,))
            if any(n not in FAMILIES["all"] for n in names):
                print(f"vgwctl: unknown scenario {args.name!r}; one of {', '.join(FAMILIES['all'])}, or a family: "
                      f"{', '.join(FAMILIES)}", file=sys.stderr)  # fmt: skip
                return 2
            results: list[Result] = []
            with html_on_the_way_out(lab, html, results):
                run_scenarios(lab, names, say_err if args.output == "json" else say, results)
                trace = find_trace(lab, results)
                if args.output == "json":
                    print(json.dumps([r.__dict__ for r in results], default=str, indent=2))
                else:
                    say(report(results, trace))
                write_html(lab, html, results, trace)
            return 0 if all(ok(r) for r in results) else 1
    except LabError as exc:
        print(f"vgwctl: {exc}", file=sys.stderr)
        return 1
    return 2


# Scenario families: short requests under steady traffic (scenarios.py), long-lived connections
# (longlived.py, issue #16), both.
FAMILIES: dict[str, tuple[str, ...]] = {
    "requests": Scenarios.ALL,
    "longlived": LongLived.NAMES,
    "all": Scenarios.ALL + LongLived.NAMES,
}


def ok(r: Result) -> bool:
    """Within its bound, or reported without one (r.informational)."""
    return r.passed or r.informational


def verdict(r: Result) -> str:
    if r.informational:
        return "REPORTED"
    return "PASS" if r.passed else "FAIL"


def down_text(res: dict[str, Any]) -> str:
    text = (
        f"lab down: stopped {res['processes']} processes, removed {len(res['namespaces'])} namespaces (with their "
        f"links), {len(res['dpdk_runtime_dirs'])} DPDK runtime dirs, {len(res['hugepage_files'])} hugepage files"
    )
    killed = res.get("killed_after_grace") or []
    return text + "".join(f"\n  killed, still running after SIGTERM's grace: {c}" for c in killed)


def run_scenarios(
    lab: Lab, names: tuple[str, ...] | list[str], out: Callable[[str], None] = say, results: list[Result] | None = None
) -> list[Result]:
    """Run ``names`` in order; each result is appended to ``results`` (a new list by default) as it
    comes, so a caller still has the finished ones when a later scenario raises."""
    sc = Scenarios(lab, out)
    ll: LongLived | None = None
    results = [] if results is None else results
    for name in names:
        if name in LongLived.NAMES:
            ll = ll or LongLived(lab, out)
            r = ll.run(name)
            out(f"  -> {name}: {verdict(r)} opened {r.summary['sent']} broken {r.summary['failed']} {r.measured}")
        else:
            r = sc.run(name)
            out(f"  -> {name}: {verdict(r)} {r.measured} sent {r.summary['sent']} failed {r.summary['failed']}")
        results.append(r)
    return results


def find_trace(lab: Lab, results: list[Result]) -> FoundTrace | None:
    """The trace of backend-failure's health transition, when that scenario ran (else None)."""
    bf = next((r for r in results if r.name == "backend-failure"), None)
    if bf is None:
        return None
    if lab.state is None or not lab.state.trace_dir:
        return FoundTrace([], "traces went to the OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT); look there")
    time.sleep(6)  # the span processors export every 5 s
    spans = backend_down_trace(load(Path(lab.state.trace_dir)), BACKENDS[1], bf.fault_at)
    return FoundTrace(spans, "" if spans else f"no health transition of {BACKENDS[1]} to down in the lab's span files")


def write_html(lab: Lab, path: Path | None, results: list[Result], trace: FoundTrace | None, problem: str = "") -> None:
    if path is None:
        return
    page = htmlreport.Page(lab_id=lab.plan.id, vip=VIP, problem=problem)
    htmlreport.write(path, htmlreport.render(results, trace, page, longlived=LongLived.NAMES))
    print(f"report page: {path}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def html_on_the_way_out(lab: Lab, path: Path | None, results: list[Result]) -> Iterator[None]:
    """A run that stops with an error still leaves its page: the scenarios that finished, and why
    the rest did not run."""
    try:
        yield
    except (Exception, KeyboardInterrupt) as exc:
        if path is not None:
            write_html(lab, path, results, None, problem=f"{type(exc).__name__}: {exc}")
        raise


def report(results: list[Result], trace: FoundTrace | None) -> str:
    requests = [r for r in results if r.name not in LongLived.NAMES]
    longlived = [r for r in results if r.name in LongLived.NAMES]
    out = report_requests(requests, trace) if requests else ""
    if longlived:
        out += "\n" + report_longlived(longlived)
    return out


def report_longlived(results: list[Result]) -> str:
    """The long-lived family: connections opened and broken per scenario, why, the longest stall a
    connection saw and, for the restarts, the forwarding gap the UDP probe measured."""
    rows = [("scenario", "opened", "broken", "survived", "longest stall", "fwd gap", "split (a/b)", "bound", "result")]
    for r in results:
        s = r.summary
        if not s.get("available", True):
            rows.append((r.name, "-", "-", "-", "-", "-", "-", r.bound, "NOT AVAILABLE"))
            continue
        split = s.get("split", {}).get("by_banner", {})  # type: ignore[attr-defined]
        fwd_gap = r.measured.get("forwarding_gap_ms")
        rows.append((r.name, str(s["opened"]), str(s["broken"]), f"{s['survived_pct']}%", f"{s['max_gap_ms']} ms",
                     f"{fwd_gap} ms" if fwd_gap is not None else "-",
                     f"{split.get('node-a', 0)}/{split.get('node-b', 0)}", r.bound, verdict(r)))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    first = next((r for r in results if "conn_sync" in r.summary), None)
    sync = first.summary["conn_sync"] if first else "?"
    out = ["", f"VGW lab report: long-lived connections (a streaming echo per connection to {VIP}:9000, every byte "
           f"checked; forwarding gap bound {GAP_BOUND_MS:g} ms a run, goal {GAP_GOAL_MS:g} ms as the median of "
           f"make bench; connection sync {sync}). A stall is TCP's: "
           "its retransmissions back off (200 ms, 600 ms, 1.4 s after the loss), so a connection stalls until the "
           "first one after the forwarding gap.", ""]  # fmt: skip
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    for r in results:
        s = r.summary
        if s.get("broken"):
            out.append(f"  {r.name} broken: {s['broken_reasons']} by node {s['broken_by_node']}; e.g. "
                       f"{s['broken_examples'][:2]}")  # type: ignore[index]  # fmt: skip
        if "split" in s:
            sp: Any = s["split"]
            out.append(f"  {r.name} split: by banner {sp['by_banner']}, forwarders' active (growth) "
                       f"{sp['forwarders_conn_active_grew']}; timings {r.measured}")  # fmt: skip
        if r.notes:
            out.append(f"  {r.name}: " + "; ".join(r.notes))
    return "\n".join(out)


def report_requests(results: list[Result], trace: FoundTrace | None) -> str:
    rows = [("scenario", "sent", "failed", "measured", "bound", "result")]
    for r in results:
        measured = ", ".join(f"{k} {v}" for k, v in r.measured.items())
        rows.append((r.name, str(r.summary["sent"]), str(r.summary["failed"]), measured, r.bound, verdict(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = ["", "VGW lab report: what clients saw (steady HTTP requests through the router to "
           f"{VIP}:80, one connection each)", ""]  # fmt: skip
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    for r in results:
        if r.notes:
            out.append(f"  {r.name}: " + "; ".join(r.notes))
        if r.summary.get("errors"):
            out.append(f"  {r.name} client errors: {r.summary['errors']}")
        out.append(f"  {r.name} spread: {r.summary['spread']}")
        phases = r.summary.get("phases")
        if isinstance(phases, dict):
            out += [f"  {r.name} legitimate requests by phase:"] + [
                f"    {name:7} {p['ok']}/{p['sent']} ok ({100 * float(p['ok_ratio']):.2f}%), "
                f"p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} ms"
                + (f"; errors {p['errors']}" if p["errors"] else "")
                for name, p in phases.items()
            ]
    if trace is not None:
        shown = render(trace.spans) if trace.spans else f"({trace.note})"
        out += ["", "Trace of backend-failure (spans from every service, by start time):", shown]
    return "\n".join(out)


def demo(lab: Lab, keep: bool, html: Path | None = None) -> int:
    t0 = time.monotonic()
    code = 1
    results: list[Result] = []
    try:
        with html_on_the_way_out(lab, html, results):
            lab.up()
            say("")
            say(status_text(lab))
            run_scenarios(lab, list(FAMILIES["all"]), results=results)
            trace = find_trace(lab, results)
            say(report(results, trace))
            write_html(lab, html, results, trace)
        code = 0 if all(ok(r) for r in results) else 1
    finally:
        if not keep:
            say("\n" + down_text(lab.down()))
    what = "every scenario within its bound" if code == 0 else "SOME SCENARIOS FAILED"
    say(f"demo finished in {time.monotonic() - t0:.0f}s: {what}")
    return code


def chaos_cmd(lab: Lab, args: argparse.Namespace) -> int:
    try:
        faults = chaos.faults_named(args.fault or list(chaos.SHORT)) if args.fault or args.short else chaos.all_faults()
    except ValueError as exc:
        print(f"vgwctl: {exc}", file=sys.stderr)
        return 2
    progress = say_err if args.output == "json" else say
    own = lab.state is None
    t0 = time.monotonic()
    try:
        if own:
            lab.up()
        results = chaos.Chaos(lab, progress).run(faults)
    finally:
        if own:
            progress(down_text(lab.down()))
    if args.output == "json":
        print(chaos.json_lines(results))
    else:
        say("\n" + chaos.table(results))
    failed = [r for r in results if not r.passed]
    verdict = f"{len(failed)} FAULT(S) BROKE THEIR BOUND" if failed else "every fault within its bound"
    progress(f"chaos finished in {time.monotonic() - t0:.0f}s: {verdict}")
    return 0 if not failed else 1


# -- status -------------------------------------------------------------------------------------------


async def _live(lab: Lab) -> dict[str, Any]:
    from vgw.bus import Bus
    from vgw.cli.runtime_view import snapshot
    from vgw.health import HEALTH_BUCKET, HealthEntry
    from vgw.monitoring import MONITOR_BUCKET, VipView
    from vgw.routes import ROUTES_BUCKET, RouteEntry

    assert lab.state is not None
    # as the operator identity: it may read routes, health and the monitor's view, and write nothing
    bus = Bus(lab.nats_options("operator"), source="/vgw/vgwctl/lab")
    await bus.connect()
    try:
        return {
            "health": await snapshot(bus, HEALTH_BUCKET, HealthEntry, ">"),
            "routes": await snapshot(bus, ROUTES_BUCKET, RouteEntry, ">"),
            "monitor": await snapshot(bus, MONITOR_BUCKET, VipView, "view.>"),
        }
    finally:
        await bus.close()


def status_text(lab: Lab) -> str:
    st = lab.status()
    live = asyncio.run(_live(lab))
    lines = [f"lab {st['lab']}: VIP {st['vip']}, {st['processes']} processes, NATS {st['nats']}, "
             f"config {st['config']}", f"router next hops for {VIP}: {', '.join(st['router_next_hops']) or 'none'}"]  # type: ignore[arg-type]  # fmt: skip
    lines.append("announcements (routectl):")
    for e in sorted(live.get("routes", {}).values(), key=lambda e: (str(e.vip), e.node)):
        lines.append(f"  {e.node:8} {e.vip!s:15} {e.state.value:13} {e.reason.value}: {e.detail[:70]}")
    lines.append("backend health (healthcheck):")
    for k, e in sorted(live.get("health", {}).items()):
        lines.append(f"  {k:34} {e.state.value:5} {e.reason.value:10} {e.detail[:40]}")
    lines.append("monitor:")
    for v in live.get("monitor", {}).values():
        nodes = ", ".join(f"{n} {s}" for n, s in v.nodes.items())
        lines.append(f"  {v.vip}:{v.port} {v.status.value}: routed {v.routed}; {nodes}")
    lines.append("traffic per node (new connections, www-http):")
    for n, (node_id, _a) in NODES.items():
        try:
            m = lab.metrics(f"shim-{n}")
            conns = sum(float(line.rsplit(" ", 1)[1]) for line in m.splitlines()
                        if line.startswith("vgw_forwarder_service_connections_total{"))  # fmt: skip
            lines.append(f"  {node_id}: {conns:.0f}")
        except OSError:
            lines.append(f"  {node_id}: shim not answering")
    r = lab.vgwctl("events", "tail", "--since", "2m", "--timeout", "1s")
    events = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")][-6:]
    lines.append("last events:")
    for e in events:
        lines.append(
            f"  {e['time'][11:23]} {e['type'].removeprefix('io.vgw.').removesuffix('.v1'):24} {e.get('subject') or ''}"
        )
    return "\n".join(lines)


def status(lab: Lab, output: str, watch: bool) -> int:
    while True:
        if output == "json":
            print(json.dumps(lab.status()))
        else:
            print(status_text(lab), flush=True)
        if not watch:
            return 0
        time.sleep(2)
        print("\033[2J\033[H", end="")
