"""Reading the lab's span files (VGW_TRACE_FILE, one per service) to show one scenario's trace."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    start: datetime
    end: datetime
    attributes: dict[str, object]
    instance: str = ""  # the process (service.instance.id: the lab names them, e.g. routectl-a)

    @property
    def ms(self) -> float:
        return (self.end - self.start).total_seconds() * 1000


@dataclass(frozen=True)
class FoundTrace:
    """One scenario's trace for the reports: its spans by start time, or why there are none."""

    spans: list[Span]
    note: str = ""


def _time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def load(trace_dir: Path) -> list[Span]:
    spans = []
    for f in sorted(trace_dir.glob("*.jsonl")):
        for line in f.read_text(errors="replace").splitlines():
            try:
                d = json.loads(line)
                resource = d.get("resource", {}).get("attributes", {})
                spans.append(
                    Span(
                        service=str(resource.get("service.name", f.stem)),
                        name=d["name"],
                        trace_id=d["context"]["trace_id"],
                        span_id=d["context"]["span_id"],
                        parent_id=d.get("parent_id"),
                        start=_time(d["start_time"]),
                        end=_time(d["end_time"]),
                        attributes=d.get("attributes") or {},
                        instance=str(resource.get("service.instance.id", "")),
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue
    return spans


def backend_down_trace(spans: list[Span], backend_prefix: str, after: float) -> list[Span]:
    """Every span of the trace that starts at the health transition of ``backend_prefix`` to down."""
    roots = [
        s
        for s in spans
        if s.name == "healthcheck transition"
        and s.attributes.get("vgw.state") == "down"
        and str(s.attributes.get("vgw.backend", "")).startswith(backend_prefix)
        and s.start.timestamp() >= after - 1
    ]
    if not roots:
        return []
    root = min(roots, key=lambda s: s.start)
    return sorted((s for s in spans if s.trace_id == root.trace_id), key=lambda s: s.start)


def render(trace: list[Span]) -> str:
    if not trace:
        return "(no trace found)"
    t0 = trace[0].start
    depth: dict[str, int] = {}
    lines = [f"trace {trace[0].trace_id}"]
    for s in trace:
        d = depth.get(s.parent_id or "", -1) + 1 if s.parent_id else 0
        depth[s.span_id] = d
        offset = (s.start - t0).total_seconds() * 1000
        lines.append(f"  +{offset:8.1f} ms  {s.ms:7.1f} ms  {'  ' * d}{s.service}: {s.name}")
    return "\n".join(lines)
