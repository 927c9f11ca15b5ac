"""Publishes this node's BGP sessions to the ``vgw_bgp`` KV bucket (:mod:`vgw.bgp`) for ``vgwctl
bgp``: on every change of a session's state or of the routes announced, and every
``BGP_REFRESH_S`` otherwise so the entry outlives the bucket's TTL only while routectl runs."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from vgw.bgp import BGP_REFRESH_S, NodeBgp, PeerSession, open_bgp
from vgw.bus import Bus
from vgw.store import KvStore

from .speaker import Speaker

log = logging.getLogger("routectl.sessions")

CHECK_INTERVAL_S = 0.5
"""How often the speaker's state is compared with what was last written (a local, cheap look)."""


def node_sessions(node: str, speaker: Speaker, at: datetime) -> NodeBgp:
    cfg = speaker.config
    peers: list[PeerSession] = []
    for p in cfg.peers if cfg is not None else ():
        state = speaker.peers.get(p.address, "down")
        peers.append(
            PeerSession(
                peer=p.address,
                asn=p.asn,
                state=state,
                since=speaker.peer_since.get(p.address),
                routes_announced=speaker.announced_to(p) if state == "up" and speaker.connected else 0,
            )
        )
    return NodeBgp(
        node=node,
        at=at,
        speaker_up=speaker.connected,
        local_asn=cfg.local_asn if cfg is not None else None,
        router_id=cfg.router_id if cfg is not None else None,
        peers=peers,
    )


async def publish_sessions(bus: Bus, node: str, speaker: Speaker) -> None:
    """Runs until cancelled; a failed write is retried at the next check (NATS may be away)."""
    store: KvStore[NodeBgp] | None = None
    last: NodeBgp | None = None
    last_at = 0.0
    while True:
        now = datetime.now(UTC)
        entry = node_sessions(node, speaker, now)
        changed = last is None or entry.model_copy(update={"at": last.at}) != last
        if changed or time.monotonic() - last_at >= BGP_REFRESH_S:
            try:
                if store is None:
                    store = await open_bgp(bus)
                await store.put(node, entry)
                last, last_at = entry, time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("writing the BGP sessions failed: %s", exc)
        await asyncio.sleep(CHECK_INTERVAL_S)
