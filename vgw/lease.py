"""A single-writer lease in a JetStream KV bucket, with fencing: who may act, decided without clocks.

One key holds the lease. The bucket's TTL (stream ``max_age``; nats-server 2.9 has no per-message
TTL) makes the server forget a holder that stops renewing. The rules:

* **Acquire** with ``create`` (only if the key is absent): exactly one contender wins; the revision it
  gets is its *fencing token*, higher than any earlier holder's.
* **Renew** with ``update(last=revision)`` every ``renew_s``. A holder that lost the lease (the key
  expired, or someone else acquired it: another revision) is refused at once and stops acting.
* **Expiry is judged by the holder** with ``time.monotonic()``: it holds the lease until
  ``lease_s - guard_s`` after *sending* its last renewal that the server confirmed. The server keeps
  that renewal at least ``lease_s`` from when it stored it (later than the send), so the holder always
  stops before anyone else can acquire. No wall clock is compared, here or across machines.
* Leadership is lost when a renewal is refused, or is not confirmed before that deadline (a
  partition, a paused process): :attr:`Lease.held` turns False on its own, with no I/O.

Writes that must not come from a stale holder check :attr:`Lease.held` right before they happen,
and may carry :attr:`Lease.token` so readers can tell which term wrote them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from nats.js.errors import BucketNotFoundError, NotFoundError
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict

from vgw.bus import Bus
from vgw.store import KvStore, RevisionMismatch

log = logging.getLogger("vgw.lease")


def lease_bucket(role: str) -> str:
    """The bucket of a single-writer role's lease, one per role: a bucket's TTL is its lease time."""
    return f"vgw_lease_{role}"


MONITOR_LEASE_BUCKET = lease_bucket("monitor")

LEASE_CHANGES = Counter("vgw_lease_changes_total", "Leases acquired and lost by this process", ["lease", "change"])


class LeaseRecord(BaseModel):
    """The lease key's value. Only ``holder`` matters to the protocol; the times are for people."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    holder: str
    term: int = 0
    """The revision that acquired the lease (0 in the acquiring write itself, which cannot know it)."""
    renewed_at: datetime


class Lease:
    """Contends for, holds and renews one lease. Drive it with :meth:`run` (or :meth:`step` in tests)."""

    def __init__(
        self,
        bus: Bus,
        bucket: str,
        holder: str,
        *,
        key: str = "holder",
        lease_s: float = 5.0,
        renew_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        self.bus = bus
        self.bucket = bucket
        self.key = key
        self.holder = holder
        self.lease_s = lease_s
        self._renew_given = renew_s
        self.renew_s = renew_s if renew_s is not None else lease_s / 5
        self._mono = monotonic
        self._store: KvStore[LeaseRecord] | None = None
        self._revision: int | None = None
        self._term: int | None = None
        self._valid_until = 0.0
        self._unanswered: tuple[LeaseRecord, float] | None = None
        self.changed = asyncio.Event()
        """Set whenever :attr:`held` may have changed (cleared by whoever waits on it)."""

    @property
    def guard_s(self) -> float:
        # Room for the holder's clock to run slower than the server's and for a round of the
        # caller's work begun just before the deadline; a tenth of the lease, at most 1 s.
        return min(1.0, self.lease_s / 10)

    @property
    def held(self) -> bool:
        """True while this process holds the lease, judged by its own monotonic clock alone."""
        return self._revision is not None and self._mono() < self._valid_until

    @property
    def token(self) -> int | None:
        """The fencing token of the current term (the acquiring revision), or None when not held."""
        return self._term if self.held else None

    @property
    def revision(self) -> int | None:
        """The revision of the last confirmed write (acquire or renewal); None when not held."""
        return self._revision if self.held else None

    def remaining_s(self) -> float:
        return max(0.0, self._valid_until - self._mono()) if self._revision is not None else 0.0

    async def open(self) -> Lease:
        """Bind to the bucket, creating it with ``lease_s`` as its TTL. A bucket made earlier with
        another TTL keeps it: the server's TTL is what bounds a holder, so a shorter one is used."""
        try:
            self._store = await KvStore.open(self.bus, self.bucket, LeaseRecord, create=False)
        except (BucketNotFoundError, NotFoundError):
            self._store = await KvStore.open(self.bus, self.bucket, LeaseRecord, ttl_s=self.lease_s)
        info = await self.bus.js.stream_info(f"KV_{self.bucket}")
        ttl = info.config.max_age
        if not ttl:
            raise ValueError(f"KV bucket {self.bucket} has no TTL: a lost holder would keep the lease for good")
        if abs(float(ttl) - self.lease_s) > 1e-3:
            log.warning("lease %s: the bucket's TTL is %.1fs, not %.1fs; using the bucket's", self.bucket, ttl,
                        self.lease_s)  # fmt: skip
            self.lease_s = min(self.lease_s, float(ttl))
            if self._renew_given is None:
                self.renew_s = self.lease_s / 5
        return self

    def _lose(self, why: str) -> None:
        if self._revision is not None:
            log.warning("lease %s/%s lost by %s: %s", self.bucket, self.key, self.holder, why)
            LEASE_CHANGES.labels(self.bucket, "lost").inc()
        self._revision = None
        self._term = None
        self._valid_until = 0.0
        self.changed.set()

    async def step(self) -> bool:
        """One acquire-or-renew attempt, bounded by the time the lease has left; returns :attr:`held`."""
        assert self._store is not None, "open() first"
        if self._revision is not None and not self.held:
            self._lose("not renewed within the lease time")
        sent = self._mono()
        record = LeaseRecord(holder=self.holder, term=self._term or 0, renewed_at=datetime.now(UTC))
        # A renewal may take no longer than the lease has left; an acquire, one renewal period.
        budget = self.remaining_s() if self._revision is not None else self.renew_s
        try:
            async with asyncio.timeout(max(budget, 0.05)):
                if self._revision is None:
                    rev = await self._store.create(self.key, record)
                else:
                    rev = await self._store.update(self.key, record, self._revision)
        except RevisionMismatch as exc:
            if not await self._adopt_unanswered(exc.current):
                if self._revision is not None:
                    self._lose(f"renewal refused ({exc}): another holder, or the lease expired")
                self._unanswered = None
            return self.held
        except Exception as exc:  # no answer (timeout, NATS away): still held until the deadline
            self._unanswered = (record, sent)
            if self._revision is not None and not self.held:
                self._lose(f"renewal not confirmed in time ({type(exc).__name__}: {exc})")
            else:
                log.debug("lease %s: %s", self.bucket, exc)
            return self.held
        self._unanswered = None
        self._confirmed(rev, sent)
        return self.held

    def _confirmed(self, rev: int, sent: float) -> None:
        acquired = self._revision is None
        self._revision = rev
        self._valid_until = sent + self.lease_s - self.guard_s
        if acquired:
            self._term = rev
            log.info("lease %s/%s acquired by %s (term %d)", self.bucket, self.key, self.holder, rev)
            LEASE_CHANGES.labels(self.bucket, "acquired").inc()
            self.changed.set()

    async def _adopt_unanswered(self, current_rev: int | None) -> bool:
        """A write whose answer never came may have been stored: the key then holds exactly that
        record, at a revision we did not learn. It is ours (sent at a known time): carry on from it."""
        if self._unanswered is None or current_rev is None or self._store is None:
            return False
        record, sent = self._unanswered
        cur = await self._store.get(self.key)
        if cur is None or cur.revision != current_rev or cur.value != record:
            return False
        log.info("lease %s: our unanswered write was stored (revision %d)", self.bucket, cur.revision)
        self._confirmed(cur.revision, sent)
        self._unanswered = None
        return True

    async def run(self) -> None:
        """Contend and renew until cancelled (then release, so another takes over at once). After
        an unexpected error the lease is kept as it is: a restarted ``run`` renews it, and if it
        cannot in time, the lease ends by itself."""
        try:
            while True:
                await self.step()
                await asyncio.sleep(self.renew_s)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self.release()
            raise

    async def release(self) -> None:
        """Give the lease up (a delete checked against our revision: never someone else's)."""
        if self._store is None or not self.held or self._revision is None:
            return
        rev = self._revision
        self._lose("released")
        kv = await self._store._handle()
        await kv.delete(self.key, last=rev)

    async def current(self) -> LeaseRecord | None:
        """Who holds the lease according to the bucket (for status views and tests)."""
        assert self._store is not None
        e = await self._store.get(self.key)
        return e.value if e is not None else None
