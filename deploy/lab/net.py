"""Building and removing the lab's namespaces and links (iproute2)."""

from __future__ import annotations

import subprocess

from .plan import (
    BACKENDS,
    CLIENT,
    FLOOD_SOURCES,
    HEALTHCHECK,
    MONITOR,
    NODES,
    ROUTER_CLIENT,
    ROUTER_EXT,
    SPARE_BACKEND,
    Plan,
)


class NetError(RuntimeError):
    pass


def sh(*args: str, ns: str | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and r.returncode != 0:
        raise NetError(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", *args, check=check)


def existing_namespaces() -> set[str]:
    r = ip("netns", "list", check=False)
    return {line.split()[0] for line in r.stdout.splitlines() if line.strip()}


def _veth(a: str, ns_a: str, b: str, ns_b: str) -> None:
    ip("link", "add", a, "type", "veth", "peer", "name", b)
    ip("link", "set", a, "netns", ns_a)
    ip("link", "set", b, "netns", ns_b)
    for name, ns in ((a, ns_a), (b, ns_b)):
        ip("-n", ns, "link", "set", name, "up")
        # af_packet hands DPDK exactly what the peer's kernel sent: full checksums, no offload tricks.
        sh("ethtool", "-K", name, "tx", "off", "tso", "off", "gso", "off", ns=ns, check=False)


def _sysctl(ns: str, values: dict[str, str], check: bool = True) -> None:
    for key, value in values.items():
        sh("sysctl", "-qw", f"{key}={value}", ns=ns, check=check)


# A router's tuning, for the namespaces that forward or bridge the syn-flood scenario's flood and the
# SYN-ACKs it provokes (the forwarders pay for those in their own CPU time, when they send them): no
# early socket demux on every forwarded packet, and no iptables hooks on bridged frames (br_netfilter,
# when the host has it; the lab filters bridged frames with nftables' bridge family only).
_ROUTER_TUNING = {"net.ipv4.ip_early_demux": "0"}
_BRIDGE_NO_NETFILTER = {f"net.bridge.bridge-nf-call-{t}": "0" for t in ("iptables", "ip6tables", "arptables")}


def build(plan: Plan) -> None:
    p = plan
    for ns in p.namespaces():
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
    for ns in (p.router, p.client):
        _sysctl(ns, _ROUTER_TUNING)
    # The router's ECMP hash (fib_multipath_hash_policy 1) takes a packet's L4 hash when it has one,
    # and a packet from a local socket carries the socket's random tx hash, which Linux redraws after
    # a retransmission timeout (net.core.txrehash): a lab client's connection would jump to the other
    # node mid-way, where it has no state. Clients on a real network arrive with no such hash (or the
    # NIC's, of the tuple), so the lab's clients keep theirs.
    for ns in (p.client, p.monitor):
        _sysctl(ns, {"net.core.txrehash": "0"}, check=False)  # absent before Linux 6.0
    for ns in (p.router, p.switch):
        _sysctl(ns, _BRIDGE_NO_NETFILTER, check=False)  # absent without br_netfilter
    # router: the client link, the external bridge (nodes and the monitor), ECMP by L4 hash
    r = p.router
    ip("-n", r, "link", "add", "br-ext", "type", "bridge")
    ip("-n", r, "addr", "add", f"{ROUTER_EXT}/24", "dev", "br-ext")
    ip("-n", r, "link", "set", "br-ext", "up")
    _sysctl(r, {
        "net.ipv4.ip_forward": "1",
        "net.ipv4.fib_multipath_hash_policy": "1",  # spread clients' connections over the nodes
        "net.ipv4.conf.all.send_redirects": "0",  # or the monitor would learn to bypass the router
        "net.ipv4.conf.br-ext.send_redirects": "0",
    })  # fmt: skip
    _veth(p.ifname("c"), p.client, p.ifname("cr"), r)
    ip("-n", r, "addr", "add", f"{ROUTER_CLIENT}/24", "dev", p.ifname("cr"))
    ip("-n", p.client, "addr", "add", f"{CLIENT}/24", "dev", p.ifname("c"))
    ip("-n", p.client, "route", "add", "default", "via", ROUTER_CLIENT)
    # the syn-flood's spoofed sources live "behind" the client: replies to them end in its blackhole
    # (and the route also keeps the router's reverse-path filter, if any, happy with the flood)
    ip("-n", r, "route", "add", FLOOD_SOURCES, "via", CLIENT)
    ip("-n", p.client, "route", "add", "blackhole", FLOOD_SOURCES)
    # switch: the internal bridge (nodes, backends, healthcheck)
    ip("-n", p.switch, "link", "add", "br-int", "type", "bridge")
    ip("-n", p.switch, "link", "set", "br-int", "up")
    # nodes: the forwarder's two ports; the kernel has the external address only, for BGP
    for n, (_node_id, ext_ip) in NODES.items():
        ns = p.node(n)
        _sysctl(ns, {"net.ipv4.ip_forward": "0"})  # the kernel must not forward what DPDK handles
        _veth(p.node_ext(n), ns, p.node_ext(n) + "p", r)
        ip("-n", r, "link", "set", p.node_ext(n) + "p", "master", "br-ext")
        ip("-n", ns, "addr", "add", f"{ext_ip}/24", "dev", p.node_ext(n))
        _veth(p.node_int(n), ns, p.node_int(n) + "p", p.switch)
        ip("-n", p.switch, "link", "set", p.node_int(n) + "p", "master", "br-int")
    # monitor vantage point on the external segment
    _veth(p.ifname("m"), p.monitor, p.ifname("mp"), r)
    ip("-n", r, "link", "set", p.ifname("mp"), "master", "br-ext")
    ip("-n", p.monitor, "addr", "add", f"{MONITOR}/24", "dev", p.ifname("m"))
    ip("-n", p.monitor, "route", "add", "default", "via", ROUTER_EXT)
    _sysctl(p.monitor, {"net.ipv4.conf.all.accept_redirects": "0"})
    # healthcheck vantage point and backends on the internal segment
    _veth(p.ifname("h"), p.healthcheck, p.ifname("hp"), p.switch)
    ip("-n", p.switch, "link", "set", p.ifname("hp"), "master", "br-int")
    ip("-n", p.healthcheck, "addr", "add", f"{HEALTHCHECK}/24", "dev", p.ifname("h"))
    for i, addr in [*BACKENDS.items(), SPARE_BACKEND]:
        _veth(p.ifname(f"b{i}"), p.backend(i), p.ifname(f"b{i}p"), p.switch)
        ip("-n", p.switch, "link", "set", p.ifname(f"b{i}p"), "master", "br-int")
        ip("-n", p.backend(i), "addr", "add", f"{addr}/24", "dev", p.ifname(f"b{i}"))


def destroy(plan: Plan) -> list[str]:
    """Remove every namespace of the lab (their links go with them); returns what was removed."""
    removed = []
    present = existing_namespaces()
    for ns in plan.namespaces():
        if ns in present:
            ip("netns", "del", ns, check=False)
            removed.append(ns)
    return removed
