"""The monitor's KV buckets (layouts in :mod:`vgw.monitoring` and :mod:`vgw.withdraw_requests`).

Requests in force are written with compare-and-set against the revision this leader last saw of
each key (fencing at the store): a leader whose key another leader has written since is refused
(:class:`Fenced`) and stops leading, instead of overwriting a newer decision.
"""

from __future__ import annotations

import logging

from vgw.bus import Bus
from vgw.monitoring import (
    MONITOR_BUCKET,
    OBS_BUCKET,
    ActiveRequest,
    PathObservation,
    VipView,
    obs_key,
    request_key,
)
from vgw.store import Entry, KvStore, RevisionMismatch, Snapshot
from vgw.withdraw_requests import (
    REQUESTS_BUCKET,
    RequestInForce,
    Withdrawal,
    entry_key,
    open_requests,
    open_withdrawals,
    withdrawal_key,
)

log = logging.getLogger("vgw.monitor")

OBS_TTL_S = 60.0  # a vantage point gone this long is forgotten


class Fenced(Exception):  # noqa: N818 - a named outcome
    """Another leader has written a request since we last read it: we are not the leader any more."""


def to_entry(req: ActiveRequest, requester: str, token: int) -> RequestInForce:
    return RequestInForce(
        kind=req.kind, target=req.target, vip=req.vip, request_id=req.request_id, requester=requester,
        standby_cluster=req.standby_cluster, reason=req.reason, issued_at=req.issued_at,
        expires_at=req.expires_at, refreshed_at=req.refreshed_at, token=token,
    )  # fmt: skip


def to_active(e: RequestInForce) -> ActiveRequest | None:
    if e.vip is None:
        return None  # not the monitor's (it always names a VIP)
    return ActiveRequest(
        kind=e.kind, target=e.target, vip=e.vip, request_id=e.request_id, standby_cluster=e.standby_cluster,
        reason=e.reason, issued_at=e.issued_at, expires_at=e.expires_at, refreshed_at=e.refreshed_at,
    )  # fmt: skip


def entry_of(judge_key: str) -> str:
    """The ``vgw_requests`` key of a judge key: ``req.<kind>.<target>.<vip>`` -> ``<kind>.<target>.<vip>``
    (both encode the VIP with ``addr_token``)."""
    return judge_key.removeprefix("req.")


def judge_key(req: ActiveRequest) -> str:
    """The judge's key of a request."""
    return request_key(req.kind, req.target, req.vip)


class MonitorStore:
    def __init__(
        self,
        observations: KvStore[PathObservation],
        views: KvStore[VipView],
        requests: KvStore[RequestInForce],
        withdrawals: KvStore[Withdrawal],
    ) -> None:
        self.observations, self.views, self.requests, self.withdrawals = observations, views, requests, withdrawals
        self._revisions: dict[str, int] = {}
        """Revision of each request key as this leader last wrote or read it."""

    @classmethod
    async def open(cls, bus: Bus, request_ttl_s: float = 30.0) -> MonitorStore:
        # Observations expire with their vantage point, requests one lifetime after their last
        # refresh, withdrawals after the rate limit's minute (bucket TTLs, counted by the server);
        # views stay (a reader sees how old one is).
        obs = await KvStore.open(bus, OBS_BUCKET, PathObservation, ttl_s=OBS_TTL_S)
        views = await KvStore.open(bus, MONITOR_BUCKET, VipView)
        requests = await open_requests(bus, request_ttl_s)
        info = await bus.js.stream_info(f"KV_{REQUESTS_BUCKET}")
        if abs(float(info.config.max_age or 0) - request_ttl_s) > 1e-3:
            # A bucket's TTL is fixed when it is created: requests refreshed every third of our
            # lifetime may vanish between refreshes (shorter) or outlive their leader (longer).
            log.warning("%s has a TTL of %.0fs, not the request lifetime %.0fs: recreate it to match",
                        REQUESTS_BUCKET, info.config.max_age or 0, request_ttl_s)  # fmt: skip
        withdrawals = await open_withdrawals(bus)
        return cls(obs, views, requests, withdrawals)

    @staticmethod
    def obs_key(o: PathObservation) -> str:
        return obs_key(o.vip, o.port, o.path, o.vantage)

    async def put_observation(self, o: PathObservation) -> None:
        await self.observations.put(self.obs_key(o), o)

    async def put_view(self, key: str, view: VipView) -> None:
        await self.views.put(key, view)

    async def requests_in_force(self) -> dict[str, ActiveRequest]:
        """Every request in force (judge keys), read at a change of leader; remembers revisions."""
        entries: dict[str, Entry[RequestInForce]] = {}
        async for ev in self.requests.watch(">"):
            if isinstance(ev, Snapshot):
                entries = ev.entries
                break
        self._revisions = {k: e.revision for k, e in entries.items()}
        out: dict[str, ActiveRequest] = {}
        for e in entries.values():
            a = to_active(e.value)
            if a is not None:
                out[judge_key(a)] = a
        return out

    async def put_request(self, req: ActiveRequest, requester: str, token: int) -> None:
        """Write a request in force, compare-and-set; raises :class:`Fenced` when another leader
        wrote the key since. A key that expired meanwhile (no refresh while there was no evidence)
        is simply created again."""
        key = entry_key(req.kind, req.target, req.vip)
        value = to_entry(req, requester, token)
        expected = self._revisions.get(key)
        try:
            if expected is None:
                rev = await self.requests.create(key, value)
            else:
                rev = await self.requests.update(key, value, expected)
        except RevisionMismatch as exc:
            if exc.current is not None:
                raise Fenced(f"{key} is at revision {exc.current}, not {expected}: another leader wrote it") from exc
            rev = await self.requests.create(key, value)
        self._revisions[key] = rev

    async def delete_request(self, judge_key: str) -> None:
        """Remove a request (restored); only the revision we know, never another leader's write."""
        key = entry_of(judge_key)
        expected = self._revisions.pop(key, None)
        kv = await self.requests._handle()
        try:
            await kv.delete(key, last=expected)
        except Exception as exc:
            current = await self.requests.get(key)
            if current is not None and current.revision != expected:
                raise Fenced(f"{key} is at revision {current.revision}, not {expected}") from exc
            if current is not None:
                raise

    async def record_withdrawal(self, request_id: str, key: str, token: int) -> None:
        await self.withdrawals.put(withdrawal_key(request_id), Withdrawal(request_id=request_id, key=key, token=token))
