"""Route control's BGP sessions as level state: the ``vgw_bgp`` KV bucket.

routectl on each node writes one entry, keyed by the node id, whenever a session changes state or
the routes it announces change, and at least every ``BGP_REFRESH_S`` otherwise. The bucket's TTL
makes the entry of a node whose routectl is gone expire: ``vgwctl bgp`` then shows the node as
unknown instead of its last sessions as current.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from nats.js import api
from pydantic import BaseModel, ConfigDict, Field

from vgw.bus import Bus
from vgw.store import KvStore

BGP_BUCKET = "vgw_bgp"
BGP_TTL_S = 30.0
BGP_REFRESH_S = 5.0
"""How often routectl rewrites its entry when nothing changed (well inside the TTL)."""

__all__ = ["BGP_BUCKET", "BGP_REFRESH_S", "BGP_TTL_S", "NodeBgp", "PeerSession", "open_bgp"]


class PeerSession(BaseModel):
    """One BGP session of a node's speaker, as ExaBGP reports it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    peer: Annotated[str, Field(max_length=64, description="The peer's address")]
    asn: Annotated[int, Field(ge=0, le=4294967295)]
    state: Annotated[str, Field(max_length=32, description="up, down, or ExaBGP's word for a state between")]
    since: datetime | None = Field(default=None, description="When the session entered this state, if seen")
    routes_announced: Annotated[int, Field(ge=0)] = Field(
        default=0, description="VIPs the speaker has announced to this peer (0 while the session is not up)"
    )


class NodeBgp(BaseModel):
    """A node's speaker and its sessions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")]
    at: datetime = Field(description="When routectl wrote this entry")
    speaker_up: bool = Field(description="ExaBGP runs and its API process is connected")
    local_asn: Annotated[int, Field(ge=0, le=4294967295)] | None = None
    router_id: Annotated[str, Field(max_length=64)] | None = None
    peers: list[PeerSession] = []


async def open_bgp(bus: Bus, *, create: bool = True) -> KvStore[NodeBgp]:
    """The bucket as routectl creates it: a TTL, one value per key, in memory (routectl rewrites its
    entry within seconds of any restart)."""
    return await KvStore.open(bus, BGP_BUCKET, NodeBgp, ttl_s=BGP_TTL_S, storage=api.StorageType.MEMORY, create=create)
