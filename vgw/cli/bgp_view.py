"""``vgwctl bgp``: every node's BGP sessions -- peer, state, since when, routes announced -- as
route control publishes them in the ``vgw_bgp`` bucket (:mod:`vgw.bgp`)."""

from __future__ import annotations

import argparse
import contextlib
from datetime import UTC, datetime
from typing import Any

from vgw.bgp import BGP_REFRESH_S, NodeBgp, open_bgp
from vgw.bus import Bus

from . import live
from .output import FORMATS, table


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bgp",
        help="BGP sessions per node (live, from route control)",
        description="Every node's BGP sessions as its route control reports them: peer, state, since when, "
        "and how many VIPs the speaker announces to the peer. A node whose routectl stopped reporting "
        "disappears after the bucket's TTL; one reporting late is marked stale.",
    )
    p.add_argument("--node", help="only this node")
    p.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format (default table)")
    live.add_watch(p)
    p.set_defaults(func=cmd_bgp)


def cmd_bgp(args: argparse.Namespace) -> int:
    return live.run(args, lambda bus: frame(bus, args.node))


async def read(bus: Bus) -> dict[str, NodeBgp]:
    """Every node's entry; empty when no routectl has written one yet (the bucket is theirs to create)."""
    with contextlib.suppress(Exception):
        store = await open_bgp(bus, create=False)
        return await store.snapshot()
    return {}


def as_data(entries: dict[str, NodeBgp], now: datetime) -> dict[str, Any]:
    nodes = []
    for _key, e in sorted(entries.items()):
        d = e.model_dump(mode="json")
        d["age_s"] = round(live.age_s(e.at, now), 3)
        # written at least every BGP_REFRESH_S: twice that without a write means routectl is stuck or cut off
        d["stale"] = d["age_s"] > 2 * BGP_REFRESH_S + 1
        nodes.append(d)
    return {"at": now.isoformat(), "nodes": nodes}


def as_text(entries: dict[str, NodeBgp], now: datetime) -> str:
    if not entries:
        return "no BGP sessions reported (is vgw-routectl running? its nodes need bgp peers in the config)"
    rows: list[list[object]] = []
    for _key, e in sorted(entries.items()):
        note = "" if e.speaker_up else "speaker down"
        if live.age_s(e.at, now) > 2 * BGP_REFRESH_S + 1:
            note = f"stale: reported {live.ago(e.at, now)}"
        if not e.peers:
            rows.append([e.node, "", "", "", "", "", note or "no peers"])
        for s in e.peers:
            since = f"{s.since.isoformat(timespec='seconds')} ({live.ago(s.since, now)})" if s.since else ""
            rows.append([e.node, s.peer, s.asn, s.state, since, s.routes_announced, note])
    return table(["NODE", "PEER", "ASN", "STATE", "SINCE", "ROUTES", "NOTE"], rows)


async def frame(bus: Bus, node: str | None) -> live.Frame:
    entries = await read(bus)
    if node is not None:
        entries = {k: v for k, v in entries.items() if v.node == node}
    now = datetime.now(UTC)
    return live.Frame(as_data(entries, now), as_text(entries, now))
