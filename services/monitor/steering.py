"""Per-node probes: policy routing that sends a marked probe to one node instead of the router.

For each node, one routing table and one ``ip rule`` (``fwmark M lookup M``) hold a host route to
each of the node's VIPs via the node's external address. A probe socket marked M (SO_MARK) then
reaches the VIP through that node only, whatever BGP and ECMP do, which is how a node that
blackholes a VIP is told apart from the others. The vantage point must reach the nodes' external
addresses directly (be on their segment), as the lab's monitor host is. Uses iproute2; needs
CAP_NET_ADMIN. Tables and marks are allocated from ``base`` and removed on stop.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading

log = logging.getLogger("vgw.monitor.steering")


class SteeringError(Exception):
    pass


def _ip(netns: str | None, *args: str) -> None:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    if r.returncode != 0:
        raise SteeringError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class Steering:
    def __init__(self, base: int, netns: str | None = None) -> None:
        self.base = base
        self.netns = netns
        self._lock = threading.Lock()  # apply runs in worker threads: config changes and the keeper
        self._tables: dict[str, int] = {}

    def mark_of(self, node: str) -> int | None:
        return self._tables.get(node)

    def apply(self, routes: dict[str, tuple[str, list[str]]]) -> None:
        """``routes``: node -> (its external address, the VIPs it serves). Replaces what was there.

        A node keeps its table (and mark) as long as it exists, so a running probe's mark never
        starts pointing at another node when nodes come or go; a new node takes the lowest free one."""
        with self._lock:
            self._apply(routes)

    def _apply(self, routes: dict[str, tuple[str, list[str]]]) -> None:
        for node in [n for n in self._tables if n not in routes]:
            self._drop(self._tables.pop(node))
        used = set(self._tables.values())
        for node in sorted(routes):
            via, vips = routes[node]
            table = self._tables.get(node)
            if table is None:
                table = next(t for t in range(self.base, self.base + 1024) if t not in used)
                used.add(table)
                # A rule left by an earlier run that did not stop cleanly would make "add" fail.
                self._ip_quiet("rule", "del", "fwmark", str(table), "lookup", str(table))
                _ip(self.netns, "rule", "add", "fwmark", str(table), "lookup", str(table), "priority", str(table))
                self._tables[node] = table
            wanted = {f"{vip}/{128 if ':' in vip else 32}" for vip in vips}
            # Replace in place, never flush first: a probe in flight must not find the table empty.
            for prefix in sorted(wanted):
                _ip(self.netns, "route", "replace", prefix, "via", via, "table", str(table))
            for prefix in self._routes_in(table) - wanted:
                self._ip_quiet("route", "del", prefix, "table", str(table))

    def _routes_in(self, table: int) -> set[str]:
        cmd = ["ip", *(["-n", self.netns] if self.netns else []), "-j", "route", "show", "table", str(table)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        try:
            entries = json.loads(r.stdout or "[]")
        except ValueError:
            return set()
        out = set()
        for e in entries:
            dst = str(e.get("dst", ""))
            out.add(dst if "/" in dst or dst == "default" else f"{dst}/{128 if ':' in dst else 32}")
        return out

    def _ip_quiet(self, *args: str) -> None:
        try:
            _ip(self.netns, *args)
        except SteeringError as exc:
            log.debug("%s", exc)

    def _drop(self, table: int) -> None:
        self._ip_quiet("rule", "del", "fwmark", str(table), "lookup", str(table))
        self._ip_quiet("route", "flush", "table", str(table))

    def close(self) -> None:
        for table in self._tables.values():
            self._drop(table)
        self._tables.clear()
