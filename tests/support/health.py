"""Health entries as the health checker writes them, for tests and benchmarks that play its part."""

from __future__ import annotations

from datetime import UTC, datetime

from vgw.events import BackendState, CheckKind, ProbeResult
from vgw.health import HealthEntry


def health_entry(
    address: str,
    port: int,
    check: str,
    state: BackendState,
    *,
    checker: str = "test",
    failure: ProbeResult = ProbeResult.REFUSED,
    detail: str = "test says so",
    consecutive: int = 1,
    traceparent: str | None = None,
) -> HealthEntry:
    """A TCP check's entry; a down one carries ``failure`` and ``detail``."""
    up = state == BackendState.UP
    return HealthEntry(
        address=address,
        port=port,
        check=check,
        kind=CheckKind.TCP,
        state=state,
        reason=ProbeResult.OK if up else failure,
        detail="" if up else detail,
        consecutive=consecutive,
        since=datetime.now(UTC),
        checker=checker,
        traceparent=traceparent,
    )
