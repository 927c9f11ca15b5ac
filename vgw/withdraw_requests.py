"""Withdraw requests in force, as KV entries that expire: what route control reads at start.

The request events (``request.node.withdraw``, ``request.cluster.withdraw``) stay the public contract
and the live signal. But the event stream's replay window is no place for state: a request in force
must be readable by a process that starts now, and must vanish by itself when its requester stops
refreshing it. So the monitor's leader also writes each request it has in force here:

``vgw_requests`` (bucket TTL = the requester's request lifetime, ``VGW_MONITOR_REQUEST_TTL_S``):

* ``node.<node>.<vip>`` and ``cluster.<cluster>.<vip>`` -- :class:`RequestInForce`. Written on a
  withdraw and on each refresh (so an entry lives one lifetime past its last refresh, counted by the
  server), deleted on a restore. ``token`` is the writer's lease term (:mod:`vgw.lease`).

``vgw_withdrawals`` (bucket TTL 60 s): ``w.<request_id>`` -- one entry per new withdrawal, so the
per-minute rate limit is counted by the server's expiry and continues across a change of leader.

Readers (route control, operators) use :func:`read_in_force` at start, then the events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from nats.js.errors import BucketNotFoundError, NotFoundError
from pydantic import BaseModel, ConfigDict, Field

from vgw.bus import Bus
from vgw.events import ClusterWithdrawRequest, IPAddress, NodeWithdrawRequest, RequestAction
from vgw.naming import addr_token
from vgw.store import KvStore

REQUESTS_BUCKET = "vgw_requests"
WITHDRAWALS_BUCKET = "vgw_withdrawals"
WITHDRAWALS_WINDOW_S = 60.0
"""The rate limit's window: a withdrawal counts for this long (the bucket's TTL)."""

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")]


class RequestInForce(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["node", "cluster"]
    target: Name
    vip: IPAddress | None = None
    """None: every VIP of the target."""
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    requester: Annotated[str, Field(min_length=1, max_length=128)]
    standby_cluster: Name | None = None
    reason: Annotated[str, Field(max_length=1024)] = ""
    issued_at: datetime
    expires_at: datetime
    refreshed_at: datetime
    token: int = 0
    """The writer's lease term (fencing token): a higher one is a later leader."""

    def event(self) -> NodeWithdrawRequest | ClusterWithdrawRequest:
        """The withdraw event this entry stands for (no evidence: the event stream has it)."""
        common = {
            "request_id": self.request_id, "action": RequestAction.WITHDRAW, "vip": self.vip,
            "requester": self.requester, "reason": self.reason, "expires_at": self.expires_at,
        }  # fmt: skip
        if self.kind == "node":
            return NodeWithdrawRequest(node=self.target, **common)
        return ClusterWithdrawRequest(cluster=self.target, standby_cluster=self.standby_cluster, **common)


class Withdrawal(BaseModel):
    """One new withdrawal, for the rate limit (the entry's presence is what counts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str
    key: str
    token: int = 0


def entry_key(kind: str, target: str, vip: IPAddress | str | None) -> str:
    return f"{kind}.{target}.{addr_token(vip) if vip is not None else 'all'}"


def node_keys(node: str) -> str:
    """The key pattern of every request for one node."""
    return f"node.{node}.>"


CLUSTER_KEYS = "cluster.>"


def withdrawal_key(request_id: str) -> str:
    return f"w.{request_id}"


async def open_requests(bus: Bus, ttl_s: float, *, create: bool = True) -> KvStore[RequestInForce]:
    """The requests bucket (created by its writer with the request lifetime as TTL)."""
    return await KvStore.open(bus, REQUESTS_BUCKET, RequestInForce, ttl_s=ttl_s, create=create)


async def open_withdrawals(bus: Bus, *, create: bool = True) -> KvStore[Withdrawal]:
    return await KvStore.open(bus, WITHDRAWALS_BUCKET, Withdrawal, ttl_s=WITHDRAWALS_WINDOW_S, create=create)


async def read_in_force(bus: Bus, keys: str = ">", *, now: datetime | None = None) -> dict[str, RequestInForce] | None:
    """Every request in force matching ``keys`` (e.g. :func:`node_keys` or :data:`CLUSTER_KEYS`),
    once; None when the bucket does not exist yet (no requester has run).

    The server's TTL already removes a request its requester stopped refreshing. ``now`` (the
    reader's clock) also drops entries whose ``expires_at`` has passed -- a comparison across
    machines' clocks, so only a second line of defence."""
    try:
        store = await KvStore.open(bus, REQUESTS_BUCKET, RequestInForce, create=False)
    except (BucketNotFoundError, NotFoundError):
        return None
    found = await store.snapshot(keys)
    return {k: r for k, r in found.items() if now is None or r.expires_at > now}
