"""What a scenario's clients saw over time, and when things happened: the data the HTML report
(htmlreport.py) draws. Plain JSON-friendly dicts, so ``vgwctl lab scenario -o json`` carries them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal, TypedDict

MarkKind = Literal["fault", "recovery", "event"]

# 100 ms: at the lab's 20 requests per second, two requests a bucket; a failure stands out alone.
REQUEST_BUCKET_S = 0.1


class Mark(TypedDict):
    """A moment on a scenario's timeline (wall clock): the fault, the recovery, or a step between."""

    label: str
    at: float
    kind: MarkKind


class Window(TypedDict):
    """A stretch of a scenario's timeline (wall clock): the flood, the forwarding gap."""

    label: str
    start: float
    end: float


class RequestTimeline(TypedDict):
    """Short requests by start time: how many of those started in each bucket succeeded or failed."""

    kind: Literal["requests"]
    start: float  # wall clock of the first bucket's start
    step_s: float
    ok: list[int]
    failed: list[int]


class ConnectionTimeline(TypedDict):
    """Long-lived connections, from the echo client's ticks (every 0.5 s): open and flowing, open
    but stalled (an echo outstanding for more than the client's report threshold), broken so far."""

    kind: Literal["connections"]
    connections: int
    ticks: list[tuple[float, int, int, int]]  # (wall clock, alive, stalled, broken)


Timeline = RequestTimeline | ConnectionTimeline


def mark(label: str, at: float | None, kind: MarkKind = "event") -> list[Mark]:
    """The mark as a list to add to ``Result.marks``: empty when the moment never came (None)."""
    return [] if at is None else [Mark(label=label, at=round(at, 3), kind=kind)]


def requests_timeline(recs: Iterable[Mapping[str, object]], step_s: float = REQUEST_BUCKET_S) -> RequestTimeline | None:
    """traffic.py's records (``t``: the request's start, ``ok``) in buckets of ``step_s``; None
    without records."""
    points = [(float(str(r["t"])), bool(r["ok"])) for r in recs]
    if not points:
        return None
    start = min(t for t, _ok in points)
    n = math.floor((max(t for t, _ok in points) - start) / step_s) + 1
    ok, failed = [0] * n, [0] * n
    for t, good in points:
        i = min(n - 1, int((t - start) / step_s))
        (ok if good else failed)[i] += 1
    return RequestTimeline(kind="requests", start=round(start, 3), step_s=step_s, ok=ok, failed=failed)


def connections_timeline(recs: Iterable[Mapping[str, object]], connections: int) -> ConnectionTimeline | None:
    """echoclient.py's ``tick`` records as a timeline; None without ticks."""
    ticks = [
        (float(str(r["t"])), int(str(r["alive"])), int(str(r["stalled"])), int(str(r["broken"])))
        for r in recs
        if r.get("event") == "tick"
    ]
    if not ticks:
        return None
    return ConnectionTimeline(kind="connections", connections=connections, ticks=sorted(ticks))
