"""``vgwctl events tail``: print VGW events as JSON lines, live, optionally replayed from the
event stream first (``--since``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from vgw.bus import Received, Subscription
from vgw.duration import parse_duration
from vgw.events import Event, registry

from .common import connect, fail, settings_from

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def add_parser(sub: Any) -> None:
    p = sub.add_parser("events", help="watch the event bus")
    esub = p.add_subparsers(dest="events_command", required=True, metavar="SUBCOMMAND")
    tail = esub.add_parser(
        "tail",
        help="print events as JSON lines, live",
        description="Print VGW events as JSON lines as they are published. With --since, first replay "
        "the events stored in the last DURATION.",
    )
    tail.add_argument(
        "--type",
        action="append",
        default=[],
        metavar="TYPE",
        help="event type, e.g. backend.down or io.vgw.backend.down.v1 (repeatable)",
    )
    tail.add_argument(
        "--subject",
        action="append",
        default=[],
        metavar="SUBJECT",
        help="NATS subject filter under vgw.v1. (repeatable)",
    )
    tail.add_argument("--since", metavar="DURATION", help="replay stored events from DURATION ago (e.g. 5m, 1h)")
    tail.add_argument("--count", type=int, metavar="N", help="exit after N events")
    tail.add_argument("--timeout", metavar="DURATION", help="exit after DURATION")
    tail.set_defaults(func=run_tail)


def resolve_type(name: str) -> type[Event]:
    types = registry()
    if name in types:
        return types[name]
    for _event_type, model in types.items():
        if model.name == name:
            return model
    known = ", ".join(sorted(m.name for m in types.values()))
    raise ValueError(f"unknown event type {name!r}; known: {known}")


def render(r: Received) -> str:
    doc: dict[str, Any] = {
        "time": r.meta.time.isoformat().replace("+00:00", "Z") if r.meta.time else None,
        "type": r.meta.type,
        "id": r.meta.id,
        "source": r.meta.source,
        "subject": r.meta.subject,
        "nats_subject": r.subject,
        "seq": r.stream_seq,
        "data": r.event.model_dump(mode="json"),
    }
    return json.dumps(doc, separators=(",", ":"))


def run_tail(args: argparse.Namespace) -> int:
    try:
        types = [resolve_type(t) for t in args.type]
        since = datetime.now(UTC) - timedelta(seconds=parse_duration(args.since)) if args.since else None
        timeout = parse_duration(args.timeout) if args.timeout else None
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    if args.count is not None and args.count < 1:
        return fail("--count must be at least 1", EXIT_USAGE)
    for s in args.subject:
        if not s.startswith("vgw.v1.") and s != "vgw.v1.>":
            return fail(f"--subject {s!r} is not under vgw.v1.", EXIT_USAGE)
    settings = settings_from(args.nats)
    return asyncio.run(_tail(settings, types, args.subject, since, args.count, timeout))


async def _tail(
    settings: Any,
    types: list[type[Event]],
    subjects: list[str],
    since: datetime | None,
    count: int | None,
    timeout: float | None,
) -> int:
    try:
        bus = await connect(settings)
    except Exception as exc:
        return fail(f"cannot reach NATS at {settings.nats_url}: {exc or type(exc).__name__}", EXIT_UNREACHABLE)
    done = asyncio.Event()
    seen = 0

    async def handler(r: Received) -> None:
        nonlocal seen
        if done.is_set():
            return
        sys.stdout.write(render(r) + "\n")
        sys.stdout.flush()
        seen += 1
        if count is not None and seen >= count:
            done.set()

    subs: list[Subscription] = []
    try:
        if not types and not subjects:
            subjects = ["vgw.v1.>"]
        if types:
            subs.append(await bus.subscribe(handler, types=types, since=since))
        for s in subjects:
            subs.append(await bus.subscribe(handler, subject=s, since=since))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
    finally:
        for sub in subs:
            await sub.unsubscribe()
        await bus.close()
    return EXIT_OK
