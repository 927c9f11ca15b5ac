"""Local truth's rule (services/routectl/localfwd.py), without a forwarder: when the forwarder's own
answer overrides the heartbeat, and when it does not. The lab's chaos suite runs it for real
(tests/lab/test_chaos.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.routectl.localfwd import Hello, LocalForwarder, Verdict
from vgw.events import DataplaneStatus, ForwarderState

STARTED_NS = 1_764_000_000_123_456_789


def status(generation: int = 7, started_ns: int = STARTED_NS) -> DataplaneStatus:
    return DataplaneStatus(
        node="node-a",
        seq=3,
        interval_s=1.0,
        forwarder=ForwarderState.UP,
        forwarder_started_at=datetime.fromtimestamp(started_ns / 1e9, tz=UTC),
        generation=generation,
    )


def local(hello: Hello | None = None, failing_since: float | None = None) -> LocalForwarder:
    lf = LocalForwarder("/nonexistent.sock", interval_s=0.2, timeout_s=1.0, grace_s=0.5)
    lf.last, lf.failing_since = hello, failing_since
    return lf


def test_same_process_and_generation_vouches() -> None:
    assert local(Hello(42, STARTED_NS, 7, at=10.0)).verdict(status(), 10.1) == Verdict.VOUCHES


def test_another_generation_or_process_leaves_it_to_the_heartbeat() -> None:
    assert local(Hello(42, STARTED_NS, 8, at=10.0)).verdict(status(), 10.1) == Verdict.UNKNOWN
    assert local(Hello(43, STARTED_NS + 5_000_000, 7, at=10.0)).verdict(status(), 10.1) == Verdict.UNKNOWN
    assert local(Hello(42, STARTED_NS, 7, at=10.0)).verdict(None, 10.1) == Verdict.UNKNOWN
    assert local().verdict(status(), 10.1) == Verdict.UNKNOWN  # no answer yet


def test_a_late_probe_is_no_evidence() -> None:
    # the probe loop stalled (e.g. the process was paused): its last answer is too old to vouch
    assert local(Hello(42, STARTED_NS, 7, at=10.0)).verdict(status(), 10.8) == Verdict.UNKNOWN


def test_no_answer_for_the_grace_means_gone() -> None:
    lf = local(Hello(42, STARTED_NS, 7, at=10.0), failing_since=10.0)
    assert lf.verdict(status(), 10.4) == Verdict.UNKNOWN
    assert lf.verdict(status(), 10.5) == Verdict.GONE
    assert lf.verdict(None, 10.6) == Verdict.GONE  # with or without a heartbeat


async def test_a_missing_socket_is_a_failed_probe() -> None:
    lf = local()
    await lf.probe()
    assert lf.failing_since is not None and "nonexistent" in lf.error
