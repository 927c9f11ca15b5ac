"""The lab report as one self-contained HTML page (``vgwctl lab demo|scenario --html FILE``).

Per scenario: its verdict, bound and figures, and a timeline of what the clients saw (short
requests: ok and failed per 100 ms; long-lived connections: flowing, stalled and broken), with
the fault, the recovery and the steps between marked; then the backend-failure trace as a
waterfall. The charts are SVG drawn here: no script, no external file, so the page works offline
and anywhere it is copied. Everything that comes from data is escaped.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from .longlived import STALL_REPORT_S
from .scenarios import Result
from .timeline import REQUEST_BUCKET_S, ConnectionTimeline, Mark, RequestTimeline
from .traces import FoundTrace, Span
from .traffic import Traffic

# The chart's geometry (px): wide enough for 30 s of 100 ms buckets at ~3 px each.
WIDTH, PLOT_H, LEFT, RIGHT, BOTTOM = 1000, 150, 56, 18, 34
LABEL_ROW_H, CHAR_W = 15, 6.4  # a mark's label row, and an estimate of a label character's width
BAND_H = 16  # a stretch's bracket row
BAND_COLORS = {"deadline": "#ef6c00", "window": "#1565c0"}
COLORS = {"ok": "#43a047", "failed": "#e53935", "flowing": "#43a047", "stalled": "#fb8c00", "broken": "#e53935"}
MARK_STYLE = {
    "fault": ("#c62828", "none", 2.0),
    "recovery": ("#2e7d32", "6 3", 2.0),
    "event": ("#616161", "2 3", 1.2),
}
SERVICE_COLORS = ("#1e88e5", "#8e24aa", "#00897b", "#f4511e", "#6d4c41", "#3949ab", "#c0ca33", "#d81b60")


@dataclass(frozen=True)
class Page:
    """What the page is about, besides the results."""

    lab_id: str
    vip: str
    problem: str = ""  # the run stopped before every scenario had run: why


def target(path: str) -> Path:
    """The page's file, checked before anything runs: a clear error (ValueError) for a path that
    cannot be written, so a long run never ends without its page."""
    if not path.strip():
        raise ValueError("empty file name")
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{path} is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"{parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"{path} is not writable")
    return p


def write(path: Path, page: str) -> None:
    """Write the page atomically: a reader never sees half of it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render(results: Sequence[Result], trace: FoundTrace | None, page: Page, longlived: Iterable[str] = ()) -> str:
    """The whole page. ``longlived``: the names of the long-lived family (their own section)."""
    ll = set(longlived)
    requests = [r for r in results if r.name not in ll]
    conns = [r for r in results if r.name in ll]
    body = [_header(results, page)]
    if requests:
        body.append('<h2 id="requests">Short requests</h2>')
        body.append(
            f"<p class=lead>{Traffic.rate:g} HTTP requests per second from the client through the router to "
            f"{escape(page.vip)}:80, a new connection each ({Traffic.timeout_s:g} s timeout). Each bar is "
            f"{REQUEST_BUCKET_S * 1000:g} ms of requests, by start time: {_key('ok', 'succeeded')}, "
            f"{_key('failed')}.</p>"
        )
        body += [_scenario(r) for r in requests]
    if conns:
        body.append('<h2 id="longlived">Long-lived connections</h2>')
        body.append(
            f"<p class=lead>Persistent TCP connections to {escape(page.vip)}:9000 (a streaming echo, every byte "
            f"checked), as the client samples them: {_key('flowing')}, {_key('stalled')} (an echo outstanding for "
            f"more than {STALL_REPORT_S:g} s), {_key('broken', 'broken so far')}.</p>"
        )
        body += [_scenario(r) for r in conns]
    if trace is not None:
        body.append(_waterfall(trace))
    return _PAGE.format(title=escape(f"VGW lab report: {page.lab_id}"), style=_STYLE, body="\n".join(body))


# -- the page's parts ------------------------------------------------------------------------------


def verdict(r: Result) -> str:
    if r.informational:
        return "REPORTED"
    return "PASS" if r.passed else "FAIL"


def _header(results: Sequence[Result], page: Page) -> str:
    counts = {v: sum(verdict(r) == v for r in results) for v in ("PASS", "FAIL", "REPORTED")}
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    out = [
        "<header><h1>VGW lab report</h1>",
        f"<p class=meta>lab <b>{escape(page.lab_id)}</b> &middot; VIP <b>{escape(page.vip)}</b> &middot; "
        f"written {made} &middot; {len(results)} scenario{'s' if len(results) != 1 else ''}: "
        + ", ".join(f'<span class="badge {v.lower()}">{n} {v}</span>' for v, n in counts.items() if n)
        + "</p></header>",
    ]
    if page.problem:
        out.append(f'<p class="problem">The run stopped early: {escape(page.problem)}</p>')
    if not results:
        out.append('<p class="missing">No scenario produced a result.</p>')
        return "\n".join(out)
    rows = []
    for r in results:
        rows.append(
            f'<tr><td><a href="#{_anchor(r.name)}">{escape(r.name)}</a></td>'
            f'<td><span class="badge {verdict(r).lower()}">{verdict(r)}</span></td>'
            f"<td>{escape(_headline(r))}</td><td>{escape(r.bound)}</td></tr>"
        )
    out.append(
        "<table class=summary><thead><tr><th>scenario</th><th>result</th><th>what clients saw</th>"
        "<th>bound</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )
    return "\n".join(out)


def _headline(r: Result) -> str:
    s = r.summary
    if "opened" in s:
        return f"{s['opened']} connections, {s['broken']} broken ({s.get('survived_pct', '?')}% survived)"
    if not s.get("available", True):
        return "not available"
    return f"{s.get('sent', 0)} requests, {s.get('failed', 0)} failed"


def _scenario(r: Result) -> str:
    v = verdict(r)
    out = [f'<section class="scenario" id="{_anchor(r.name)}" data-name="{escape(r.name, quote=True)}">']
    out.append(f'<h3>{escape(r.name)} <span class="badge {v.lower()}">{v}</span></h3>')
    out.append(f"<p class=bound><b>Bound:</b> {escape(r.bound or 'none')}</p>")
    if r.timeline is None:
        why = "; ".join(r.notes) or "the scenario ended before its clients ran"
        out.append(f'<p class="missing">No timeline: {escape(why)}</p>')
    elif r.timeline["kind"] == "requests":
        out.append(_chart(r, _request_bars(r.timeline), f"requests per {r.timeline['step_s'] * 1000:g} ms"))
    else:
        out.append(_chart(r, _connection_bars(r.timeline), "connections"))
    out.append(_figures(r))
    if r.timeline is not None and r.notes:
        out.append("<ul class=notes>" + "".join(f"<li>{escape(n)}</li>" for n in r.notes) + "</ul>")
    out.append("</section>")
    return "\n".join(out)


def _figures(r: Result) -> str:
    s = r.summary
    items: list[tuple[str, str]] = []
    if "opened" in s:
        items += [("opened", str(s["opened"])), ("broken", str(s["broken"])), ("survived", f"{s['survived_pct']}%")]
        split = s.get("split")
        if isinstance(split, dict) and isinstance(split.get("by_banner"), dict):
            items.append(("split", ", ".join(f"{k} {v}" for k, v in split["by_banner"].items())))
        if s.get("broken_reasons"):
            items.append(("why broken", ", ".join(f"{k} {v}" for k, v in dict(s["broken_reasons"]).items())))  # type: ignore[call-overload]
    elif "sent" in s:
        items += [("sent", str(s["sent"])), ("failed", str(s["failed"]))]
        if s.get("spread"):
            items.append(("spread", ", ".join(f"{k} {v}" for k, v in dict(s["spread"]).items())))  # type: ignore[call-overload]
    items += [(k.replace("_", " "), _num(v)) for k, v in r.measured.items() if k not in ("broken", "survived_pct")]
    if s.get("errors"):
        items.append(("client errors", "; ".join(str(e) for e in s["errors"])))  # type: ignore[attr-defined]
    phases = s.get("phases")
    if isinstance(phases, dict):
        for name, p in phases.items():
            items.append((f"{name} the flood", f"{p['ok']}/{p['sent']} ok, p99 {p['p99_ms']} ms"))
    cells = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in items)
    return f"<dl class=figures>{cells}</dl>"


def _num(v: float) -> str:
    if v < 0:
        return "never"
    return f"{v:g}"


# -- timelines -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bars:
    """Stacked bars: per slot, its start (wall clock) and the height of each layer, bottom first."""

    layers: tuple[str, ...]
    slots: Sequence[tuple[float, tuple[int, ...]]]
    width_s: float
    y_max: int
    tip: str  # a bar's tooltip: format() with t (s from the fault) and the layers' values
    alert: str = ""  # the layer to mark under the axis wherever it is not zero


def _request_bars(tl: RequestTimeline) -> Bars:
    step = float(tl["step_s"])
    slots = [
        (tl["start"] + i * step, (ok, bad)) for i, (ok, bad) in enumerate(zip(tl["ok"], tl["failed"], strict=True))
    ]
    y_max = max((ok + bad for _t, (ok, bad) in slots), default=1)
    return Bars(("ok", "failed"), slots, step, max(1, y_max), "{t:+.1f} s: {ok} ok, {failed} failed", "failed")


def _connection_bars(tl: ConnectionTimeline) -> Bars:
    ticks = tl["ticks"]
    # the client ticks every 0.5 s, give or take its loop's latency: a bar is the typical interval
    width = statistics.median([b[0] - a[0] for a, b in itertools.pairwise(ticks)] or [0.5]) or 0.5
    slots = [(t, (max(0, alive - stalled), stalled, broken)) for t, alive, stalled, broken in ticks]
    y_max = max([tl["connections"]] + [sum(v) for _t, v in slots])
    tip = "{t:+.1f} s: {flowing} flowing, {stalled} stalled, {broken} broken"
    return Bars(("flowing", "stalled", "broken"), slots, width, max(1, y_max), tip)


def _chart(r: Result, bars: Bars, y_label: str) -> str:
    t0 = r.fault_at or bars.slots[0][0]
    first, last = bars.slots[0][0], bars.slots[-1][0] + bars.width_s
    # marks and windows just outside the clients' time still belong on the chart; later ones are listed
    reach = (first - 2.0, last + 2.0)
    shown = [m for m in r.marks if reach[0] <= m["at"] <= reach[1]]
    windows = [w for w in r.windows if w["end"] >= reach[0] and w["start"] <= reach[1]]
    lo = min([first] + [m["at"] for m in shown] + [w["start"] for w in windows]) - t0
    hi = max([last] + [m["at"] for m in shown] + [w["end"] for w in windows]) - t0
    if r.deadline_s is not None:
        hi = max(hi, r.deadline_s)
    plot_w = WIDTH - LEFT - RIGHT
    scale = plot_w / max(hi - lo, 1e-3)

    def x(t_rel: float) -> float:
        return LEFT + (t_rel - lo) * scale

    rows = _label_rows([(x(m["at"] - t0), _mark_label(m, t0)) for m in shown])
    # below the marks' labels, a row per stretch (the bound, the windows), then the plot
    bands = ([("deadline", 0.0, r.deadline_s, f"bound: {r.deadline_s:g} s")] if r.deadline_s is not None else []) + [
        ("window", w["start"] - t0, w["end"] - t0, w["label"]) for w in windows
    ]
    strip = 8 + LABEL_ROW_H * (max((row for row, _left in rows), default=-1) + 1) + 4
    top = strip + BAND_H * len(bands) + 4
    height = top + PLOT_H + BOTTOM
    base = top + PLOT_H
    svg = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="{escape(r.name, quote=True)} timeline">'
    ]
    svg += _axes(lo, hi, x, top, base, bars.y_max, y_label)
    svg += _bar_rects(bars, t0, x, scale, base)
    for i, (kind, a, b, label) in enumerate(bands):
        svg.append(_band(kind, x(a), x(b), strip + BAND_H * i, top, base, label))
    for m, (row, left) in zip(shown, rows, strict=True):
        svg.append(_mark(m, t0, x(m["at"] - t0), 8 + LABEL_ROW_H * row + 11, left, base))
    svg.append("</svg>")
    return '<div class="chart">' + "".join(svg) + "</div>" + _events(r.marks, t0)


def _axes(
    lo: float, hi: float, x: Callable[[float], float], top: float, base: float, y_max: int, y_label: str
) -> list[str]:
    out = [f'<line x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}" stroke="#9e9e9e"/>']
    for t in _ticks(lo, hi, _tick_step(hi - lo)):
        xx = x(t)
        out.append(
            f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{base + 4}" stroke="#eeeeee"/>'
            f'<text x="{xx:.1f}" y="{base + 16}" text-anchor="middle" class="tick">{t:+g} s</text>'
        )
    out.append(
        f'<text x="{WIDTH - RIGHT}" y="{base + 30}" text-anchor="end" class="axis-label">seconds from the fault</text>'
    )
    for v in range(y_max + 1) if y_max <= 5 else sorted({0, y_max // 2, y_max}):
        yy = base - PLOT_H * v / y_max
        out.append(
            f'<line x1="{LEFT - 4}" y1="{yy:.1f}" x2="{WIDTH - RIGHT}" y2="{yy:.1f}" stroke="#f0f0f0"/>'
            f'<text x="{LEFT - 7}" y="{yy + 4:.1f}" text-anchor="end" class="tick">{v}</text>'
        )
    out.append(
        f'<text transform="translate(14 {top + PLOT_H / 2:.0f}) rotate(-90)" text-anchor="middle" '
        f'class="axis-label">{escape(y_label)}</text>'
    )
    return out


def _bar_rects(bars: Bars, t0: float, x: Callable[[float], float], scale: float, base: float) -> list[str]:
    out = []
    starts = [start for start, _v in bars.slots]
    for i, (start, values) in enumerate(bars.slots):
        if not any(values):
            continue
        xx = x(start - t0)
        # a bar reaches the next sample (the client's ticks are not exactly regular), less a gap
        px = ((starts[i + 1] - start) if i + 1 < len(starts) else bars.width_s) * scale
        w = max(1.0, px - (1.0 if px > 3 else 0.0))
        if bars.alert and values[bars.layers.index(bars.alert)]:
            # one failed request among hundreds is a sliver of a bar: a tick under the axis shows it
            out.append(f'<rect class="rug" x="{xx:.1f}" y="{base + 1}" width="{max(w, 2.0):.1f}" height="5" '
                       f'fill="{COLORS[bars.alert]}"/>')  # fmt: skip
        tip = escape(bars.tip.format(t=start - t0, **dict(zip(bars.layers, values, strict=True))))
        y = base
        out.append(f"<g><title>{tip}</title>")
        for layer, v in zip(bars.layers, values, strict=True):
            if not v:
                continue
            h = PLOT_H * v / bars.y_max
            y -= h
            out.append(
                f'<rect class="bar {layer}" x="{xx:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                f'fill="{COLORS[layer]}"/>'
            )
        out.append("</g>")
    return out


def _band(kind: str, x0: float, x1: float, y: float, top: float, base: float, label: str) -> str:
    """A stretch of time: a bracket above the plot with its label, and a tint over the plot (drawn
    over the bars, which fill it)."""
    color = BAND_COLORS[kind]
    mid = y + BAND_H / 2
    w = max(1.5, x1 - x0)
    return (
        f'<g class="band {kind}"><title>{escape(label)}</title>'
        f'<rect class="{kind}" x="{x0:.1f}" y="{top}" width="{w:.1f}" height="{base - top}" fill="{color}" '
        f'fill-opacity="0.16"/>'
        f'<line x1="{x0 + w:.1f}" y1="{mid:.1f}" x2="{x0 + w:.1f}" y2="{base}" stroke="{color}" stroke-width="1.2" '
        f'stroke-dasharray="4 3"/>'
        f'<path d="M{x0:.1f} {mid + 4:.1f} V{mid:.1f} H{x0 + w:.1f} V{mid + 4:.1f}" fill="none" stroke="{color}" '
        f'stroke-width="1.5"/>'
        f'<text x="{x0 + w + 5:.1f}" y="{mid + 4:.1f}" fill="{color}" class="band-label">{escape(label)}</text></g>'
    )


def _mark(m: Mark, t0: float, xx: float, label_y: float, left: bool, base: float) -> str:
    color, dash, width = MARK_STYLE[m["kind"]]
    label = escape(_mark_label(m, t0))
    anchor = f'x="{xx - 3:.1f}" text-anchor="end"' if left else f'x="{xx + 3:.1f}"'
    return (
        f'<g class="mark {m["kind"]}"><title>{label}</title>'
        f'<line x1="{xx:.1f}" y1="{label_y + 3:.1f}" x2="{xx:.1f}" y2="{base}" stroke="{color}" '
        f'stroke-width="{width}" stroke-dasharray="{dash}"/>'
        f'<text {anchor} y="{label_y:.1f}" fill="{color}" class="mark-label">{label}</text></g>'
    )


def _mark_label(m: Mark, t0: float) -> str:
    return f"{m['label']} {_rel(m['at'] - t0)}"


def _rel(seconds: float) -> str:
    """Seconds from the fault, signed; never "-0.00"."""
    v = round(seconds, 2)
    return f"{v + 0.0:+.2f} s" if v else "+0.00 s"


def _label_rows(labels: list[tuple[float, str]]) -> list[tuple[int, bool]]:
    """Where each mark's label goes: a row, so that no two labels overlap, and whether it sits left
    of its line (True) because it would run off the chart's right edge."""
    spans = []
    for xx, text in labels:
        w = 3 + CHAR_W * len(text)
        flip = xx + w > WIDTH - 2
        spans.append((xx - w, xx, True) if flip else (xx, xx + w, False))
    ends: list[float] = []
    out = [(0, False)] * len(labels)
    for i in sorted(range(len(spans)), key=lambda i: spans[i][0]):
        start, end, flip = spans[i]
        row = next((j for j, e in enumerate(ends) if e + 8 < start), len(ends))
        if row == len(ends):
            ends.append(0.0)
        ends[row] = end
        out[i] = (row, flip)
    return out


def _events(marks: list[Mark], t0: float) -> str:
    if not marks:
        return ""
    items = "".join(
        f'<li><span class="dot {m["kind"]}"></span>{_rel(m["at"] - t0)} {escape(m["label"])}</li>'
        for m in sorted(marks, key=lambda m: m["at"])
    )
    return f"<ol class=events>{items}</ol>"


def _ticks(lo: float, hi: float, step: float) -> list[float]:
    """Multiples of ``step`` from ``lo`` to ``hi``, rounded so that labels read 0.3, not 0.30000000000000004."""
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [round(k * step, 9) + 0.0 for k in range(first, last + 1)]


def _tick_step(span: float, most: int = 14) -> float:
    """The smallest of 1, 2, 5 x 10^n that puts at most ``most`` ticks on ``span``."""
    magnitude = 10.0 ** math.floor(math.log10(max(span, 1e-9) / most))
    return next(m * magnitude for m in (1, 2, 5, 10) if span / (m * magnitude) <= most)


# -- the trace -------------------------------------------------------------------------------------


def _waterfall(trace: FoundTrace) -> str:
    out = ['<h2 id="trace">Trace of backend-failure</h2>']
    spans = trace.spans
    if not spans:
        out.append(f'<p class="missing">No trace: {escape(trace.note or "no span of it was found")}</p>')
        return "\n".join(out)
    t0 = min(s.start for s in spans)
    total_ms = max((s.end - t0).total_seconds() * 1000 for s in spans) or 1.0
    services = list(dict.fromkeys(s.service for s in spans))
    color = {svc: SERVICE_COLORS[i % len(SERVICE_COLORS)] for i, svc in enumerate(services)}
    trace_id = spans[0].trace_id.removeprefix("0x")
    out.append(
        f"<p class=lead>One health transition of backend-1, followed across {len(services)} services: "
        f"{len(spans)} spans in {total_ms:.1f} ms (trace {escape(trace_id)}). A bar is a span on the time axis, "
        "indented under its parent; hover for its attributes.</p>"
    )
    label_w, row_h, axis_h = 380, 24, 26
    plot_w = WIDTH - label_w - 70
    height = axis_h + row_h * len(spans) + 8
    svg = [
        f'<svg class="waterfall" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="backend-failure trace waterfall">'
    ]
    for v in _ticks(0.0, total_ms, _tick_step(total_ms, most=10)):
        xx = label_w + plot_w * v / total_ms
        svg.append(
            f'<line x1="{xx:.1f}" y1="{axis_h - 6}" x2="{xx:.1f}" y2="{axis_h + row_h * len(spans)}" stroke="#e8e8e8"/>'
            f'<text x="{xx:.1f}" y="{axis_h - 10}" text-anchor="middle" class="tick">{v:g} ms</text>'
        )
    for i, (s, depth) in enumerate(zip(spans, _depths(spans), strict=True)):
        y = axis_h + i * row_h
        x0 = label_w + plot_w * (s.start - t0).total_seconds() * 1000 / total_ms
        w = max(2.0, plot_w * s.ms / total_ms)
        attrs = "\n".join(f"{k} = {v}" for k, v in sorted(s.attributes.items()))
        who = _who(s)
        tip = escape(f"{who}: {s.name}\n+{(s.start - t0).total_seconds() * 1000:.1f} ms, {s.ms:.2f} ms\n{attrs}")
        svg.append(
            f'<g class="span-row"><title>{tip}</title>'
            f'<rect x="0" y="{y}" width="{WIDTH}" height="{row_h}" fill="#000000" '
            f'fill-opacity="{0.03 if i % 2 else 0.0}"/>'
            f'<text x="{8 + 14 * depth}" y="{y + 16}" class="span-label"><tspan class="svc" '
            f'fill="{color[s.service]}">{escape(who)}</tspan> {escape(s.name)}</text>'
            f'<rect class="span" x="{x0:.1f}" y="{y + 5}" width="{w:.1f}" height="{row_h - 10}" rx="2" '
            f'fill="{color[s.service]}"/>'
            f'<text x="{x0 + w + 5:.1f}" y="{y + 16}" class="tick">{s.ms:.1f} ms</text></g>'
        )
    svg.append("</svg>")
    out.append('<div class="chart">' + "".join(svg) + "</div>")
    return "\n".join(out)


def _who(s: Span) -> str:
    """The span's process: its instance (the lab names them: routectl-a), else its service and the
    node the span names (routectl and shim run once per node)."""
    if s.instance:
        return s.instance
    node = str(s.attributes.get("vgw.node", ""))
    return f"{s.service} ({node})" if node else s.service


def _depths(spans: list[Span]) -> list[int]:
    """Each span's depth under its parent (a parent outside the list counts as a root)."""
    depth: dict[str, int] = {}
    out = []
    for s in spans:
        d = depth[s.parent_id] + 1 if s.parent_id in depth else 0
        depth[s.span_id] = d
        out.append(d)
    return out


# -- small helpers -----------------------------------------------------------------------------------


def _anchor(name: str) -> str:
    return "s-" + "".join(c if c.isalnum() or c == "-" else "_" for c in name)


def _key(layer: str, text: str = "") -> str:
    return f'<span class="key" style="background:{COLORS[layer]}"></span>{escape(text or layer)}'


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"""

_STYLE = """
body { margin: 0; background: #f5f6f8; color: #212121; font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
  Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 20px 20px 48px; }
h1 { margin: 0 0 4px; font-size: 26px; }
h2 { margin: 32px 0 6px; font-size: 20px; border-bottom: 2px solid #e0e0e0; padding-bottom: 4px; }
h3 { margin: 0 0 4px; font-size: 17px; }
.meta, .lead { color: #555; margin: 4px 0 12px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
  color: #fff; vertical-align: middle; }
.badge.pass { background: #2e7d32; } .badge.fail { background: #c62828; } .badge.reported { background: #757575; }
table.summary { border-collapse: collapse; width: 100%; background: #fff; border-radius: 8px; overflow: hidden;
  box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.summary th, .summary td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #eee; }
.summary td:nth-child(-n+2) { white-space: nowrap; }
.summary th { background: #fafafa; font-weight: 600; }
.summary a { color: #1565c0; text-decoration: none; }
section.scenario { background: #fff; border-radius: 8px; padding: 14px 16px; margin: 14px 0;
  box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.bound { margin: 0 0 8px; color: #424242; }
.chart { overflow-x: auto; }
svg { display: block; font: 11px system-ui, "DejaVu Sans", sans-serif; }
svg .tick { fill: #757575; } svg .axis-label { fill: #616161; font-size: 11px; }
svg .mark-label { font-size: 11px; font-weight: 600; }
svg .band-label { font-size: 11px; font-weight: 600; }
svg .span-label { fill: #212121; font-size: 12px; } svg .svc { font-weight: 600; }
svg g:hover > rect.bar, svg g.span-row:hover > rect.span { opacity: .75; }
.key { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 2px; }
dl.figures { display: flex; flex-wrap: wrap; gap: 6px 10px; margin: 10px 0 0; }
dl.figures div { background: #f5f5f5; border-radius: 6px; padding: 3px 9px; }
dl.figures dt { display: inline; color: #616161; } dl.figures dt::after { content: ": "; }
dl.figures dd { display: inline; margin: 0; font-weight: 600; }
ol.events { list-style: none; padding: 0; margin: 6px 0 0; display: flex; flex-wrap: wrap; gap: 2px 18px;
  color: #424242; font-size: 13px; }
.dot { display: inline-block; width: 9px; height: 9px; border-radius: 50%; margin-right: 5px; }
.dot.fault { background: #c62828; } .dot.recovery { background: #2e7d32; } .dot.event { background: #9e9e9e; }
ul.notes { margin: 8px 0 0; padding-left: 18px; color: #555; font-size: 13px; }
.missing { background: #fff3e0; border-left: 4px solid #fb8c00; padding: 8px 12px; border-radius: 4px; }
.problem { background: #ffebee; border-left: 4px solid #c62828; padding: 8px 12px; border-radius: 4px; }
"""
