"""Per-node probes: policy routing that sends a marked probe to one node instead of the router.

For each node, one routing table and one ``ip rule`` (``fwmark M lookup M``) hold a host route to
each of the node's VIPs via the node's external address. A probe socket marked M (SO_MARK) then
reaches the VIP through that node only, whatever BGP and ECMP do, which is how a node that
blackholes a VIP is told apart from the others. The vantage point must reach the nodes' external
addresses directly (be on their segment), as the lab's monitor host is. Uses iproute2; needs
CAP_NET_ADMIN. Tables and marks are ``base + index`` and are removed on stop.
"""

from __future__ import annotations

import logging
import subprocess

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
        self._tables: dict[str, int] = {}

    def mark_of(self, node: str) -> int | None:
        return self._tables.get(node)

    def apply(self, routes: dict[str, tuple[str, list[str]]]) -> None:
        """``routes``: node -> (its external address, the VIPs it serves). Replaces what was there."""
        wanted = {node: self.base + i for i, node in enumerate(sorted(routes))}
        for node, table in list(self._tables.items()):
            if wanted.get(node) != table:
                self._drop(table)
                del self._tables[node]
        for node, table in wanted.items():
            via, vips = routes[node]
            if node not in self._tables:
                _ip(self.netns, "rule", "add", "fwmark", str(table), "lookup", str(table), "priority", str(table))
                self._tables[node] = table
            self._flush(table)
            for vip in vips:
                _ip(
                    self.netns,
                    "route",
                    "replace",
                    f"{vip}/{128 if ':' in vip else 32}",
                    "via",
                    via,
                    "table",
                    str(table),
                )

    def _flush(self, table: int) -> None:
        try:
            _ip(self.netns, "route", "flush", "table", str(table))
        except SteeringError as exc:
            if "does not exist" not in str(exc):  # a table that was never filled is fine
                raise

    def _drop(self, table: int) -> None:
        for args in (
            ("rule", "del", "fwmark", str(table), "lookup", str(table)),
            ("route", "flush", "table", str(table)),
        ):
            try:
                _ip(self.netns, *args)
            except SteeringError as exc:
                log.debug("%s", exc)

    def close(self) -> None:
        for table in self._tables.values():
            self._drop(table)
        self._tables.clear()
