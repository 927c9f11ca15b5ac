"""What vgwctl's live views (``get health``, ``top``, ``bgp``) share: the ``--watch`` option, the
NATS connection (exit 3 when it cannot be had), and the refresh loop.

A view is a coroutine that turns the connected bus into one frame: the data for ``-o json``/``yaml``
and the text for people. Without ``--watch`` one frame is printed; with it, a frame every N seconds
until interrupted (Ctrl-C: exit 130, like every vgwctl command). Watched JSON is one compact
document per line so a script can read frames as they come.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vgw.bus import Bus
from vgw.settings import VgwSettings

from .common import connect, fail, settings_from
from .output import emit

EXIT_OK, EXIT_USAGE, EXIT_UNREACHABLE = 0, 2, 3
CONNECT_TIMEOUT_S = 5.0
CLEAR = "\x1b[H\x1b[2J"


@dataclass
class Frame:
    data: dict[str, Any]
    text: str


View = Callable[[Bus], Awaitable[Frame]]


def watch_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.2 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: the refresh interval must be 0.2-3600 seconds")
    return value


def add_watch(p: argparse.ArgumentParser, default_s: float = 2.0) -> None:
    p.add_argument(
        "-w",
        "--watch",
        nargs="?",
        const=default_s,
        type=watch_interval,
        metavar="SECONDS",
        help=f"refresh every SECONDS (default {default_s:g}) until interrupted",
    )


def nats_settings(args: argparse.Namespace) -> VgwSettings:
    return settings_from(getattr(args, "nats", None))


async def open_bus(settings: VgwSettings) -> Bus | None:
    """The connected bus, or None after saying why on stderr."""
    # the bus logs each failed attempt as a warning; one clear line is what a person needs here
    logging.getLogger("vgw.bus").setLevel(logging.ERROR)
    try:
        return await asyncio.wait_for(connect(settings), CONNECT_TIMEOUT_S)
    except Exception as exc:
        fail(f"cannot reach NATS at {settings.nats_url}: {exc or type(exc).__name__}", EXIT_UNREACHABLE)
        return None


def _print(frame: Frame, fmt: str, watching: bool) -> None:
    if watching and fmt == "json":
        print(json.dumps(frame.data, separators=(",", ":"), default=str), flush=True)
        return
    if watching and fmt == "table":
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        sys.stdout.write(CLEAR if sys.stdout.isatty() else "\n")
        print(stamp, flush=True)
    if watching and fmt == "yaml":
        print("---")
    emit(frame.data, fmt, frame.text)
    sys.stdout.flush()


async def run_view(args: argparse.Namespace, view: View) -> int:
    settings = nats_settings(args)
    bus = await open_bus(settings)
    if bus is None:
        return EXIT_UNREACHABLE
    interval: float | None = getattr(args, "watch", None)
    try:
        while True:
            started = time.monotonic()
            frame = await view(bus)
            _print(frame, args.output, interval is not None)
            if interval is None:
                return EXIT_OK
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
    finally:
        await bus.close()


def run(args: argparse.Namespace, view: View) -> int:
    return asyncio.run(run_view(args, view))


def age_s(at: datetime, now: datetime | None = None) -> float:
    return max(0.0, ((now or datetime.now(UTC)) - at).total_seconds())


def ago(at: datetime | None, now: datetime | None = None) -> str:
    """``12s ago`` style, for tables."""
    if at is None:
        return ""
    s = age_s(at, now)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    if s < 172800:
        return f"{s / 3600:.0f}h ago"
    return f"{s / 86400:.0f}d ago"


__all__ = ["EXIT_UNREACHABLE", "EXIT_USAGE", "Frame", "add_watch", "age_s", "ago", "fail", "run", "run_view"]
