"""Local truth: route control asks its own node's forwarder directly, not only through the bus.

The shim's ``dataplane.status`` heartbeat says what the forwarder has programmed, but it travels
through the shim and NATS. Alone it fails both ways: a forwarder that dies while NATS is down stays
announced (the heartbeat's silence is indistinguishable from the bus's), and a shim restart with a
healthy, programmed forwarder withdraws the node (the heartbeat stops). So route control also sends
HELLO on the forwarder's control socket every ``interval_s`` (read-only: pid, start time, generation).

What it concludes, in :meth:`LocalForwarder.verdict`:

* **gone** -- no answer (no socket, refused, timed out) for ``grace_s``: the forwarder is dead;
  withdraw now, with or without NATS;
* **vouches** -- it answers and is the process the last heartbeat described (same start time) at the
  generation the heartbeat reported: what the shim last said is still true, whatever the shim and the
  bus are doing, so the heartbeat's age does not matter;
* **unknown** -- otherwise (another process or generation: a restart or an apply the next heartbeat
  will describe; or no probe yet): the heartbeat decides, as without local truth.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from vgw.events import DataplaneStatus
from vgw.fwdctl import FwdClient, FwdError, FwdUnavailableError

from . import metrics

log = logging.getLogger("routectl.localfwd")


class Verdict(enum.Enum):
    GONE = "gone"
    VOUCHES = "vouches"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Hello:
    """The forwarder's last answer to HELLO."""

    pid: int
    started_ns: int
    generation: int
    at: float  # monotonic


class LocalForwarder:
    def __init__(self, socket_path: str, *, interval_s: float, timeout_s: float, grace_s: float) -> None:
        self.socket_path = socket_path
        self.interval_s = interval_s
        self.grace_s = grace_s
        self._client = FwdClient(socket_path, timeout_s=timeout_s)
        self.last: Hello | None = None
        self.failing_since: float | None = None
        self.error = ""

    async def run(self, on_change: Callable[[], None]) -> None:
        """Probe until cancelled; ``on_change`` when the verdict's inputs change (up/down, identity,
        generation)."""
        try:
            while True:
                before = (self.failing_since is None, self._identity())
                await self.probe()
                if (self.failing_since is None, self._identity()) != before or self._gone_now():
                    on_change()
                await asyncio.sleep(self.interval_s)
        finally:
            await self._client.close()

    async def probe(self) -> None:
        now = time.monotonic()
        try:
            hello = await self._client.hello()
            self.last = Hello(int(hello["pid"]), int(hello["start_unix_ns"]), int(hello["generation"]), now)
        except (FwdUnavailableError, FwdError, KeyError, ValueError, TypeError) as exc:
            if self.failing_since is None:
                self.failing_since = now
                log.warning("the local forwarder does not answer on %s: %s", self.socket_path, exc)
            self.error = str(exc)[:200]
            metrics.LOCAL_FORWARDER_UP.set(0)
            await self._client.close()
            return
        if self.failing_since is not None:
            log.info("the local forwarder answers again (pid %d)", self.last.pid)
        self.failing_since = None
        self.error = ""
        metrics.LOCAL_FORWARDER_UP.set(1)

    def verdict(self, status: DataplaneStatus | None, now: float) -> Verdict:
        if self.failing_since is not None:
            return Verdict.GONE if now - self.failing_since >= self.grace_s else Verdict.UNKNOWN
        h = self.last
        if h is None or status is None or status.forwarder_started_at is None:
            return Verdict.UNKNOWN
        if now - h.at > self.grace_s + self.interval_s:
            return Verdict.UNKNOWN  # the probe itself is late (a stalled loop): no evidence either way
        if _same_start(status.forwarder_started_at, h.started_ns) and status.generation == h.generation:
            return Verdict.VOUCHES
        return Verdict.UNKNOWN

    def _identity(self) -> tuple[int, int, int] | None:
        h = self.last
        return (h.pid, h.started_ns, h.generation) if h is not None else None

    def _gone_now(self) -> bool:
        return self.failing_since is not None and time.monotonic() - self.failing_since >= self.grace_s


def _same_start(reported: datetime, started_ns: int) -> bool:
    """The heartbeat carries the start time as a datetime (microseconds); HELLO in nanoseconds."""
    return abs(reported.timestamp() * 1e6 - started_ns / 1e3) < 2.0
