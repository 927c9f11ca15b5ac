"""``vgw_vip_announcing_nodes{vip}``: how many nodes announce each VIP, as route control recorded it.

Why the monitor, and only its leader: each node's routectl is the single writer of its own
decisions in ``vgw_routes``, so a count over every node has to be made by a reader of the whole
bucket. Counted by every routectl, the figure would be exported N times, could differ between
nodes for a moment, and would vanish exactly when every routectl is down -- when the alert matters
most. The monitor already reads cluster-wide state and has one leader (docs/monitor.md); exporting
from the leader only gives one series per VIP, computed from one consistent view.

VIPs come from the config (enabled VIPs with at least one node): a VIP nobody has decided on yet
counts 0, not "absent". Entries of nodes the config no longer assigns to the VIP are not counted.
"""

from __future__ import annotations

import logging

from prometheus_client import Gauge

from vgw.bus import Bus
from vgw.config import ConfigDocument, ServingNodes
from vgw.routes import ROUTES_BUCKET, RouteEntry
from vgw.store import Change, KvStore, Snapshot

log = logging.getLogger("vgw.monitor.announcers")

ANNOUNCING = Gauge(
    "vgw_vip_announcing_nodes",
    "Nodes whose route control announces the VIP (announced or deprioritised), from vgw_routes (monitor leader only)",
    ["vip"],
)


class AnnouncerCount:
    def __init__(self) -> None:
        self.entries: dict[str, RouteEntry] = {}
        self.loaded = False
        self._nodes_of: dict[str, set[str]] = {}
        self._exported: set[str] = set()

    def set_config(self, doc: ConfigDocument) -> None:
        nodes_of: dict[str, set[str]] = {}
        serving = ServingNodes(doc)
        for vip in doc.vips:
            if not vip.enabled:
                continue  # programmed, never announced: nothing to alert on
            primary, standby = serving(vip)
            if primary or standby:
                nodes_of[str(vip.address)] = {*primary, *standby}
        self._nodes_of = nodes_of

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self._nodes_of, 0)
        for e in self.entries.values():
            vip = str(e.vip)
            if vip in out and e.node in self._nodes_of[vip] and e.announced:
                out[vip] += 1
        return out

    def export(self, leading: bool) -> None:
        # Set, then remove what is gone (no clear(): a scrape in between would see no series).
        now = self.counts() if leading and self.loaded else {}
        for vip, n in now.items():
            ANNOUNCING.labels(vip).set(n)
        for vip in self._exported - now.keys():
            ANNOUNCING.remove(vip)
        self._exported = set(now)

    async def follow(self, bus: Bus) -> None:
        """Mirror ``vgw_routes`` (created by routectl; waited for), rebuilt from a snapshot after any
        reconnect (and after a restart by the supervisor)."""
        store = await KvStore.attach(bus, ROUTES_BUCKET, RouteEntry, writer="vgw-routectl")
        async for ev in store.watch(">"):
            self.apply(ev)

    def apply(self, ev: Snapshot[RouteEntry] | Change[RouteEntry]) -> None:
        if isinstance(ev, Snapshot):
            self.entries = {k: e.value for k, e in ev.entries.items()}
            self.loaded = True
        elif isinstance(ev, Change):
            if ev.entry is None:
                self.entries.pop(ev.key, None)
            else:
                self.entries[ev.key] = ev.entry.value
