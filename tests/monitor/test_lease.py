"""vgw/lease.py against a real nats-server: one holder at a time, revision-checked renewals
(fencing), expiry judged by the holder's monotonic clock alone, release hands over at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import vgw.lease as lease_mod
from vgw.bus import Bus
from vgw.lease import Lease, LeaseRecord
from vgw.store import KvStore, RevisionMismatch


class FakeMonotonic:
    """A monotonic clock the test moves (a holder that was paused, or whose clock stalled)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def bucket() -> str:
    return f"vgw_lease_test_{uuid.uuid4().hex[:8]}"


async def until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)
    assert pred(), what


async def test_exactly_one_holder_and_renewals_keep_the_term(bus: Bus) -> None:
    name = bucket()
    a = await Lease(bus, name, "a", lease_s=2.0).open()
    b = await Lease(bus, name, "b", lease_s=2.0).open()
    assert await a.step() and not await b.step()
    term = a.token
    assert term is not None and a.revision == term
    for _ in range(3):
        assert await a.step() and not await b.step()
    assert a.token == term and a.revision is not None and a.revision > term  # renewals move the revision
    current = await a.current()
    assert current is not None and current.holder == "a" and current.term == term


async def test_a_stale_holders_renewal_is_refused_and_it_stops_at_once(bus: Bus) -> None:
    """a's clock stalls (it still believes it holds the lease); the server forgets it after the TTL
    and b acquires. a's renewal carries its old revision: refused, a stops holding that very moment."""
    name = bucket()
    stalled = FakeMonotonic()
    a = await Lease(bus, name, "a", lease_s=1.0, monotonic=stalled).open()
    b = await Lease(bus, name, "b", lease_s=1.0).open()
    assert await a.step()
    old_term = a.token
    async with asyncio.timeout(10):  # the server's TTL runs out; b gets it
        while not await b.step():
            await asyncio.sleep(0.1)
    assert a.held, "a's own clock says its lease runs (the stalled clock)"
    assert not await a.step(), "a renewal with a revision that is no longer current must be refused"
    assert not a.held and a.token is None
    assert b.token is not None and old_term is not None and b.token > old_term  # fencing tokens only grow
    # and a direct compare-and-set with the old revision is refused too
    store = await KvStore.open(bus, name, LeaseRecord, create=False)
    current = await b.current()
    assert current is not None and current.holder == "b"
    try:
        await store.update("holder", current.model_copy(update={"holder": "a"}), old_term)
    except RevisionMismatch:
        pass
    else:
        raise AssertionError("a write with a stale revision was accepted")
    after = await b.current()
    assert after is not None and after.holder == "b"


async def test_the_holder_stops_by_its_own_clock_without_any_io(bus: Bus) -> None:
    """Partitioned or paused: no renewal is confirmed, and the lease ends by the holder's monotonic
    clock alone -- before the server could give it to anyone else."""
    clock = FakeMonotonic()
    a = await Lease(bus, bucket(), "a", lease_s=3.0, monotonic=clock).open()
    assert await a.step()
    clock.t += 3.0 - a.guard_s - 0.01
    assert a.held
    clock.t += 0.02
    assert not a.held and a.token is None


async def test_wall_clock_skew_changes_nothing(bus: Bus) -> None:
    """The lease never reads the wall clock for a decision: a holder whose wall clock is an hour off
    holds and renews exactly as one whose clock is right."""

    class Skewed(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return datetime.now(UTC) + timedelta(hours=1)

    name = bucket()
    setattr(lease_mod, "datetime", Skewed)  # noqa: B010 - the module's wall clock, for this test
    try:
        a = await Lease(bus, name, "a", lease_s=2.0).open()
        assert await a.step()
    finally:
        setattr(lease_mod, "datetime", datetime)  # noqa: B010
    b = await Lease(bus, name, "b", lease_s=2.0).open()
    for _ in range(3):
        assert await a.step() and not await b.step()


async def test_release_hands_over_at_once_and_run_renews(bus: Bus) -> None:
    name = bucket()
    a = await Lease(bus, name, "a", lease_s=5.0, renew_s=0.2).open()
    b = await Lease(bus, name, "b", lease_s=5.0, renew_s=0.2).open()
    runner = asyncio.create_task(a.run())
    try:
        await until(lambda: a.held, 5, "a acquires")
        assert not await b.step()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert not a.held
    assert await b.step(), "a released its lease when it stopped: b need not wait for the TTL"
