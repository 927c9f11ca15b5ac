"""Validation of configuration documents: every problem at once, each with a path and a reason.

:func:`load_document` is the one entry point for text (YAML or JSON, size-limited, alias bombs
refused); :func:`validate_document` for already parsed data. Both raise :class:`ConfigInvalid`
with every :class:`Issue` found: first the structural ones (types, ranges, unknown fields, from the
pydantic model), then -- only when the structure is sound -- the semantic ones (references that
(must resolve, duplicates, overlaps, unsupported features, limits and memory budgets per node).
Paths read like ``vips[2].services[0].port``.

:func:`document_warnings` finds what is valid but likely wrong (a service expecting more
connections than its node's LIPs and backends can hold): the config service commits such a
document and hands the warnings back (``x-vgw-warning`` trailing metadata; ``vgwctl apply`` prints
them).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from .budget import VipCostCache, node_costs, over_budget
from .model import (
    ConfigDocument,
    HealthCheck,
    Limits,
    MonitorProbe,
    Node,
    Service,
    ServingNodes,
    Vip,
    forwarder_backends,
    forwarder_lips,
)
from .records import gc_paused
from .types import IP

MAX_ISSUES = 1000
"""At most this many issues are reported (the count of the rest is summarised)."""
MAX_WARNINGS = 100
"""At most this many warnings are reported (the count of the rest is summarised)."""


@dataclass(frozen=True, slots=True)
class Issue:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


SECRET_FIELDS = frozenset({"password"})
"""Keys whose values are secrets wherever they appear in a document (BGP TCP-MD5 passwords)."""


def scrub_issue(issue: Issue) -> Issue:
    """Validation messages echo bad input values; never a secret's."""
    if issue.path.rsplit(".", 1)[-1] in SECRET_FIELDS and "(got " in issue.reason:
        return Issue(issue.path, issue.reason[: issue.reason.index("(got ")].rstrip())
    return issue


class ConfigInvalid(ValueError):  # noqa: N818 - an outcome, like RevisionMismatch
    """A document failed validation; ``issues`` lists every problem found."""

    def __init__(self, issues: list[Issue]) -> None:
        if len(issues) > MAX_ISSUES:
            rest = len(issues) - MAX_ISSUES
            issues = [*issues[:MAX_ISSUES], Issue("", f"... and {rest} more problems")]
        self.issues = issues
        lines = "\n".join(f"  {i}" for i in issues[:20])
        more = f"\n  ... {len(issues) - 20} more" if len(issues) > 20 else ""
        super().__init__(f"{len(issues)} problem(s) in the configuration:\n{lines}{more}")


def format_path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


# --- text ------------------------------------------------------------------------------------------

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _expanded_size(obj: Any, budget: int) -> int:
    """Nodes in ``obj`` with YAML aliases expanded, counted in linear time (memoised by identity);
    stops counting past ``budget``."""
    memo: dict[int, int] = {}

    def count(o: Any) -> int:
        if isinstance(o, dict | list):
            key = id(o)
            if key in memo:
                return memo[key]
            memo[key] = 0  # guards against cycles
            items = list(o.keys()) + list(o.values()) if isinstance(o, dict) else o
            n = 1
            for item in items:
                n += count(item)
                if n > budget:
                    break
            memo[key] = n
            return n
        return 1

    return count(obj)


def parse_text(text: str | bytes) -> Any:
    """Parse a YAML or JSON document (JSON is taken by the faster JSON parser). Raises
    :class:`ConfigInvalid` for oversized text, syntax errors and alias bombs."""
    size = len(text)
    if size > Limits.DOCUMENT_BYTES:
        raise ConfigInvalid(
            [Issue("document", f"document is {size} bytes; the limit is {Limits.DOCUMENT_BYTES} bytes")]
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigInvalid([Issue("document", f"not UTF-8 text (byte {exc.start})")]) from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if stripped.rstrip().endswith("}"):  # JSON, not YAML flow style: report the JSON error
                raise ConfigInvalid(
                    [Issue("document", f"JSON syntax error at line {exc.lineno} column {exc.colno}: {exc.msg}")]
                ) from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigInvalid([Issue("document", f"YAML syntax error{where}: {problem}")]) from None
    if _expanded_size(data, Limits.YAML_NODES) > Limits.YAML_NODES:
        raise ConfigInvalid(
            [Issue("document", f"document expands to more than {Limits.YAML_NODES} values (YAML aliases)")]
        )
    return data


def load_document(text: str | bytes) -> ConfigDocument:
    """Parse and fully validate a document; raises :class:`ConfigInvalid` with every problem."""
    return validate_document(parse_text(text))


# --- structure ------------------------------------------------------------------------------------

_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
}


def _short(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def structural_issues(exc: ValidationError) -> list[Issue]:
    issues = []
    for err in exc.errors(include_url=False):
        path = format_path(err["loc"])
        msg = _MESSAGES.get(err["type"], err["msg"])
        if err["type"] not in _MESSAGES and "input" in err and not isinstance(err["input"], dict | list):
            got = _short(err["input"])
            if got not in msg:
                msg = f"{msg} (got {got})"
        issues.append(Issue(path or "document", msg))
    return issues


def validate_document(data: Any) -> ConfigDocument:
    """Validate parsed data (dicts and lists); raises :class:`ConfigInvalid` with every problem."""
    if not isinstance(data, dict):
        raise ConfigInvalid([Issue("document", f"expected a mapping at the top, got {type(data).__name__}")])
    try:
        doc = ConfigDocument.model_validate(data)
    except ValidationError as exc:
        raise ConfigInvalid(structural_issues(exc)) from None
    issues = semantic_issues(doc)
    if issues:
        raise ConfigInvalid(issues)
    return doc


# --- semantics ------------------------------------------------------------------------------------


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


@functools.lru_cache(maxsize=1 << 18)
def _bad_unicast(ip: IP) -> str | None:
    if ip.is_unspecified:
        return "is the unspecified address"
    if ip.is_loopback:
        return "is a loopback address"
    if ip.is_multicast:
        return "is a multicast address"
    if ip.is_link_local:
        return "is a link-local address"
    if isinstance(ip, ipaddress.IPv4Address) and (ip == _BROADCAST or ip.is_reserved):
        return "is a reserved or broadcast address"
    return None


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


class CheckMemo:
    """What a follower's previous validations proved, so re-checking each revision costs about the
    size of what changed. A VIP object the reader's assembly reused unchanged (it reuses every
    object a revision did not change), under the same health checks, nodes, clusters, peers and
    node, LIP and VIP addresses, passed before and passes again."""

    def __init__(self) -> None:
        self.context: tuple[Any, ...] | None = None
        self.vips: dict[int, tuple[Vip, list[str], int]] = {}
        """id(vip) -> (the VIP, its service names, its backend count): VIPs that had no issue."""
        self.good_backends: set[bytes] = set()
        """Backend addresses (packed) that passed the address checks under this context."""
        self.costs: VipCostCache = {}
        """The forwarder memory cost of each VIP's services (vgw.config.budget.node_costs)."""


class _Checker:
    def __init__(self, doc: ConfigDocument, memo: CheckMemo | None = None) -> None:
        self.doc = doc
        self.issues: list[Issue] = []
        self.special: dict[bytes, str] | None = None
        self.good_backends: set[bytes] = set()
        self.memo = memo
        self.memo_valid = False
        self.memo_vips_next: dict[int, tuple[Vip, list[str], int]] = {}

    def add(self, path: str, reason: str) -> None:
        self.issues.append(Issue(path, reason))

    def unicast(self, path: str, ip: IP, what: str, *, dataplane: bool) -> None:
        bad = _bad_unicast(ip)
        if bad:
            self.add(path, f"{what} {ip} {bad}")
        elif dataplane and ip.version == 6:
            self.add(path, f"{what} {ip}: IPv6 is not supported by the forwarder yet (IPv4 only)")

    def run(self) -> list[Issue]:
        doc = self.doc
        self.clusters = {c.name for c in doc.clusters}
        self.checks = {c.name: c for c in doc.health_checks}
        self.node_ids = {n.id for n in doc.nodes}
        self._duplicates("clusters", [c.name for c in doc.clusters], "cluster name")
        self._duplicates("nodes", [n.id for n in doc.nodes], "node id", field="id")
        self._duplicates("health_checks", [c.name for c in doc.health_checks], "health check name")
        self._duplicates("vips", [str(v.address) for v in doc.vips], "VIP address", field="address")
        self._duplicates("vips", [v.name for v in doc.vips if v.name is not None], "VIP name", sparse=True)
        for i, c in enumerate(doc.clusters):
            if c.standby is not None:
                if c.standby not in self.clusters:
                    self.add(f"clusters[{i}].standby", f"unknown cluster {c.standby!r}")
                elif c.standby == c.name:
                    self.add(f"clusters[{i}].standby", "a cluster cannot be its own standby")
        for i, h in enumerate(doc.health_checks):
            self._check(f"health_checks[{i}]", h)
        self.vip_addrs: dict[IP, str] = {v.address: f"vips[{i}]" for i, v in enumerate(doc.vips)}
        self._nodes()
        self._conn_sync()
        self._vips()
        self._limits()
        return self.issues

    def _duplicates(
        self, section: str, values: list[str], what: str, *, field: str = "name", sparse: bool = False
    ) -> None:
        if sparse:
            items = [getattr(o, field) for o in getattr(self.doc, section)]
            counts = Counter(v for v in items if v is not None)
            for i, v in enumerate(items):
                if v is not None and counts[v] > 1:
                    self.add(f"{section}[{i}].{field}", f"duplicate {what} {v!r}")
            return
        counts = Counter(values)
        seen: set[str] = set()
        for i, v in enumerate(values):
            if counts[v] > 1:
                first = values.index(v)
                if v in seen:
                    self.add(f"{section}[{i}].{field}", f"duplicate {what} {v!r} (first at {section}[{first}])")
                seen.add(v)

    # --- health checks ---

    def _check(self, path: str, h: HealthCheck) -> None:
        if h.timeout > h.interval:
            self.add(f"{path}.timeout", f"timeout {h.timeout:g}s is longer than the interval {h.interval:g}s")
        if h.fast_interval is not None and h.fast_interval > h.interval:
            self.add(f"{path}.fast_interval", "fast_interval must not be longer than interval")
        self._params(path, h.kind, h.http, h.payload, h.grpc)

    def _params(self, path: str, kind: str, http: Any, payload: Any, grpc: Any = None) -> None:
        if http is not None and kind not in ("http", "https"):
            self.add(f"{path}.http", f"http settings only apply to http and https checks, not {kind}")
        if payload is not None and kind not in ("tcp_send_expect", "udp"):
            self.add(f"{path}.payload", f"payload settings only apply to tcp_send_expect and udp, not {kind}")
        if kind == "tcp_send_expect" and (payload is None or (not payload.send and payload.expect is None)):
            self.add(f"{path}.payload", "tcp_send_expect needs payload.send and/or payload.expect")
        if kind == "udp" and payload is not None and not payload.send:
            self.add(f"{path}.payload.send", "a udp check must send something (an empty datagram is not a probe)")
        if payload is not None and payload.encoding == "hex":
            for name in ("send", "expect"):
                value = getattr(payload, name)
                if value is None:
                    continue
                try:
                    bytes.fromhex(value)
                except ValueError:
                    self.add(f"{path}.payload.{name}", f"{_short(value)} is not hex (encoding: hex)")
        if grpc is not None and kind != "grpc":
            self.add(f"{path}.grpc", f"grpc settings only apply to grpc checks, not {kind}")

    # --- nodes ---

    def _nodes(self) -> None:
        doc = self.doc
        owner_addr: dict[IP, str] = {}
        self.lip_owner: dict[IP, str] = {}
        self.router_ids: dict[str, str] = {}
        for i, n in enumerate(doc.nodes):
            p = f"nodes[{i}]"
            if n.cluster not in self.clusters:
                self.add(f"{p}.cluster", f"unknown cluster {n.cluster!r} (declare it under clusters)")
            if n.mode == "dual_arm" and n.internal is None:
                self.add(f"{p}.internal", "dual_arm mode needs an internal port")
            if n.mode == "single_arm" and n.internal is not None:
                self.add(f"{p}.internal", "single_arm mode has no internal port (remove it or use dual_arm)")
            for side in ("external", "internal"):
                port = getattr(n, side)
                if port is None:
                    continue
                ip = port.address.ip
                self.unicast(f"{p}.{side}.address", ip, "address", dataplane=True)
                if ip in owner_addr:
                    self.add(f"{p}.{side}.address", f"address {ip} is also used by {owner_addr[ip]}")
                owner_addr[ip] = f"{p}.{side}"
                if ip in self.vip_addrs:
                    self.add(f"{p}.{side}.address", f"address {ip} is also the VIP {self.vip_addrs[ip]}")
                if port.gateway is not None and port.gateway not in port.address.network:
                    self.add(f"{p}.{side}.gateway", f"gateway {port.gateway} is not in {port.address.network}")
            for j, r in enumerate(n.routes):
                if r.port == "internal" and n.internal is None:
                    self.add(f"{p}.routes[{j}].port", "this node has no internal port")
            self._lips(p, n)
            if n.bgp is not None:
                self._bgp(p, n)
        self.node_addrs = owner_addr

    def _conn_sync(self) -> None:
        """A sync cluster's forwarders talk on one segment: sync datagrams are link-local (TTL 255)."""
        for c in self.doc.clusters:
            if not c.conn_sync.enabled:
                continue
            members = [(j, n) for j, n in enumerate(self.doc.nodes) if n.cluster == c.name]
            first: tuple[int, Node] | None = None
            for j, n in members:
                port = n.internal if n.mode == "dual_arm" else n.external
                if port is None:
                    continue
                if port.address.version != 4:
                    self.add(f"nodes[{j}]", f"cluster {c.name!r} syncs connections over IPv4 only")
                    continue
                if first is None:
                    first = (j, n)
                    continue
                f = first[1].internal if first[1].mode == "dual_arm" else first[1].external
                assert f is not None
                side = "internal" if n.mode == "dual_arm" else "external"
                if port.address.ip not in f.address.network or f.address.ip not in port.address.network:
                    self.add(
                        f"nodes[{j}].{side}.address",
                        f"cluster {c.name!r} syncs connections: {port.address} must share a subnet with "
                        f"nodes[{first[0]}] ({f.address}); sync stays on one segment",
                    )

    def _lips(self, p: str, n: Node) -> None:
        total = 0
        for j, net in enumerate(n.lip_pool):
            lp = f"{p}.lip_pool[{j}]"
            if net.version == 6:
                self.add(lp, f"LIP {net}: IPv6 is not supported by the forwarder yet (IPv4 only)")
                continue
            if net.num_addresses > 2 * Limits.LIPS_PER_NODE:
                self.add(lp, f"prefix {net} is larger than the {Limits.LIPS_PER_NODE} LIPs a node can use")
                continue
            addrs = list(net.hosts()) if net.num_addresses > 2 else list(net)
            total += len(addrs)
            for ip in addrs:
                bad = _bad_unicast(ip)
                if bad:
                    self.add(lp, f"LIP {ip} {bad}")
                    break
                if ip in self.vip_addrs:
                    self.add(lp, f"LIP {ip} is also the VIP {self.vip_addrs[ip]} (LIP pools must not overlap VIPs)")
                    break
                if ip in self.lip_owner:
                    self.add(lp, f"LIP {ip} is also in {self.lip_owner[ip]} (LIP pools must be disjoint)")
                    break
                self.lip_owner[ip] = lp
        if total > Limits.LIPS_PER_NODE:
            self.add(f"{p}.lip_pool", f"{total} LIPs; a node uses at most {Limits.LIPS_PER_NODE}")

    def _bgp(self, p: str, n: Node) -> None:
        assert n.bgp is not None
        rid = str(n.bgp.router_id)
        if rid in self.router_ids:
            self.add(f"{p}.bgp.router_id", f"router id {rid} is also used by {self.router_ids[rid]}")
        self.router_ids[rid] = p
        seen: dict[IP, int] = {}
        for j, peer in enumerate(n.bgp.peers):
            pp = f"{p}.bgp.peers[{j}]"
            if peer.address in seen:
                self.add(f"{pp}.address", f"duplicate peer {peer.address} (first at peers[{seen[peer.address]}])")
            seen[peer.address] = j
            if peer.hold_time in (1, 2):
                self.add(f"{pp}.hold_time", "hold time must be 0 or at least 3 seconds (RFC 4271)")
            bad = _bad_unicast(peer.address)
            if bad and not peer.address.is_loopback:
                self.add(f"{pp}.address", f"peer address {peer.address} {bad}")
            # The session's source: its own local_address, else the external address. Of another
            # family, ExaBGP refuses its whole configuration, every other session of the node
            # included.
            fam = peer.address.version
            if peer.local_address is not None and peer.local_address.version != fam:
                self.add(
                    f"{pp}.local_address",
                    f"local_address {peer.local_address} is IPv{peer.local_address.version} and peer "
                    f"{peer.address} is IPv{fam}: a session has one family",
                )
            elif peer.local_address is None and n.external.address.ip.version != fam:
                self.add(
                    f"{pp}.local_address",
                    f"peer {peer.address} is IPv{fam} and the session would start from the external address "
                    f"{n.external.address.ip}: set local_address to an IPv{fam} address of this node",
                )

    # --- VIPs ---

    def _vips(self) -> None:
        doc = self.doc
        svc_names: dict[str, str | int] = {}
        self.node_cluster = {n.id: n.cluster for n in doc.nodes}
        self.peer_addrs = {peer.address for n in doc.nodes if n.bgp for peer in n.bgp.peers}
        special: dict[bytes, str] = {}
        for ip, where in self.node_addrs.items():
            special[ip.packed] = f"a node address ({where})"
        for ip, where in self.lip_owner.items():
            special[ip.packed] = f"a LIP ({where})"
        for ip, where in self.vip_addrs.items():
            special[ip.packed] = f"a VIP ({where})"
        self.special = special
        if self.memo is not None:
            # Everything a VIP's checks read besides the VIP (a handful of health checks: by content).
            context = (
                tuple(sorted((n, c.model_dump_json()) for n, c in self.checks.items())),
                tuple(sorted(special)),
                tuple(sorted(self.node_cluster.items())),
                tuple(sorted(self.clusters)),
                tuple(sorted(a.packed for a in self.peer_addrs)),
            )
            self.memo_valid = context == self.memo.context
            self.memo.context = context
            # An address that was a fine backend is one still while no node, LIP or VIP took it.
            if not self.memo_valid or len(self.memo.good_backends) > (1 << 20):
                self.memo.good_backends = set()
            self.good_backends = self.memo.good_backends
        for i, v in enumerate(doc.vips):
            if not self._vip_seen(i, v, svc_names):
                self._vip(f"vips[{i}]", v, svc_names)
        if self.memo is not None:
            self.memo.vips = self.memo_vips_next

    def _vip_seen(self, i: int, v: Vip, svc_names: dict[str, str | int]) -> bool:
        """True when this very VIP object passed under the same context and its service names are
        still unique: nothing in it needs checking again."""
        if not self.memo_valid or self.memo is None:
            return False
        hit = self.memo.vips.get(id(v))
        if hit is None or hit[0] is not v or any(name in svc_names for name in hit[1]):
            return False
        svc_names.update(zip(hit[1], itertools.repeat(i)))  # the path is found again if ever needed
        self.memo_vips_next[id(v)] = hit
        return True

    def _vip(self, p: str, v: Vip, svc_names: dict[str, str | int]) -> None:
        issues_before = len(self.issues)
        self._vip_checks(p, v, svc_names)
        if self.memo is not None and len(self.issues) == issues_before:
            backends = sum(len(s.backends) for s in v.services)
            self.memo_vips_next[id(v)] = (v, [s.name for s in v.services], backends)

    def _vip_checks(self, p: str, v: Vip, svc_names: dict[str, str | int]) -> None:
        self.unicast(f"{p}.address", v.address, "VIP", dataplane=True)
        if v.address in self.lip_owner:
            self.add(f"{p}.address", f"VIP {v.address} is also a LIP of {self.lip_owner[v.address]}")
        if v.address in self.peer_addrs:
            self.add(f"{p}.address", f"VIP {v.address} is also a BGP peer address")
        if v.cluster not in self.clusters:
            self.add(f"{p}.cluster", f"unknown cluster {v.cluster!r}")
        if v.standby_cluster is not None:
            if v.standby_cluster not in self.clusters:
                self.add(f"{p}.standby_cluster", f"unknown cluster {v.standby_cluster!r}")
            elif v.standby_cluster == v.cluster:
                self.add(f"{p}.standby_cluster", "the standby cluster must differ from the VIP's cluster")
        if v.nodes is not None:
            for j, nid in enumerate(v.nodes):
                if nid not in self.node_cluster:
                    self.add(f"{p}.nodes[{j}]", f"unknown node {nid!r}")
                elif self.node_cluster[nid] != v.cluster:
                    self.add(
                        f"{p}.nodes[{j}]",
                        f"node {nid!r} is in cluster {self.node_cluster[nid]!r}, not the VIP's cluster {v.cluster!r}",
                    )
            for nid, count in Counter(v.nodes).items():
                if count > 1:
                    self.add(f"{p}.nodes", f"node {nid!r} listed {count} times")
        bgp = v.bgp
        if isinstance(bgp.low_watermark, int) == isinstance(bgp.high_watermark, int):
            low = bgp.low_watermark if isinstance(bgp.low_watermark, int) else float(bgp.low_watermark[:-1])
            high = bgp.high_watermark if isinstance(bgp.high_watermark, int) else float(bgp.high_watermark[:-1])
            if low > high:
                self.add(f"{p}.bgp.high_watermark", f"high watermark {high:g} is below the low watermark {low:g}")
        endpoints: dict[tuple[int, str], int] = {}
        for j, s in enumerate(v.services):
            sp = f"{p}.services[{j}]"
            if s.name in svc_names:
                first = svc_names[s.name]
                if isinstance(first, int):  # a VIP skipped by the memo: its index only
                    first = f"vips[{first}].services[{[x.name for x in self.doc.vips[first].services].index(s.name)}]"
                self.add(f"{sp}.name", f"duplicate service name {s.name!r} (first at {first})")
            else:
                svc_names[s.name] = sp
            ep = (s.port, s.protocol)
            if ep in endpoints:
                self.add(
                    f"{sp}.port",
                    f"duplicate VIP:port/protocol {v.address}:{s.port}/{s.protocol} "
                    f"(first at services[{endpoints[ep]}])",
                )
            else:
                endpoints[ep] = j
            self._service(sp, v, s)
        probe_names: set[str] = set()
        for j, m in enumerate(v.monitor):
            self._probe(f"{p}.monitor[{j}]", m, endpoints, probe_names)

    def _service(self, sp: str, v: Vip, s: Service) -> None:
        vip_len = len(v.address.packed)
        if s.forwarding != "fullnat":
            self.add(f"{sp}.forwarding", f"forwarding mode {s.forwarding!r} is not supported yet (only fullnat)")
        if s.protocol != "tcp":
            self._tcp_only(sp, s)
        if s.maglev_table_size is not None:
            if s.scheduler != "maglev":
                self.add(f"{sp}.maglev_table_size", f"only for the maglev scheduler, not {s.scheduler}")
            elif not _is_prime(s.maglev_table_size):
                self.add(f"{sp}.maglev_table_size", f"{s.maglev_table_size} is not a prime")
        set_timeouts = s.timeouts.set_values()
        if s.protocol == "udp" and any(k.startswith("tcp_") for k in set_timeouts):
            self.add(f"{sp}.timeouts", "TCP timeouts on a UDP service")
        if s.protocol == "tcp" and "udp" in set_timeouts:
            self.add(f"{sp}.timeouts.udp", "a UDP timeout on a TCP service")
        check = None
        if s.health_check is not None:
            check = self.checks.get(s.health_check)
            if check is None:
                self.add(f"{sp}.health_check", f"unknown health check {s.health_check!r}")
            elif check.kind == "udp" and s.protocol == "tcp" and check.port is None:
                self.add(f"{sp}.health_check", f"a udp check on a TCP service needs its own port ({check.name!r})")
        special = self.special or {}
        seen: dict[tuple[bytes, int], int] = {}
        for k, b in enumerate(s.backends):
            a = b.address
            pk = a.packed
            if pk not in self.good_backends:
                bad = _bad_unicast(a)
                if bad:
                    self.add(f"{sp}.backends[{k}].address", f"backend {a} {bad}")
                elif len(pk) != 4:
                    self.add(f"{sp}.backends[{k}].address", f"backend {a}: IPv6 is not supported by the forwarder yet")
                elif pk in special:
                    self.add(f"{sp}.backends[{k}].address", f"backend {a} is {special[pk]}")
                else:
                    self.good_backends.add(pk)
            if len(pk) != vip_len:
                self.add(f"{sp}.backends[{k}].address", f"backend {a} and VIP {v.address} are of different IP versions")
            key = (pk, b.port)
            if key in seen:
                self.add(f"{sp}.backends[{k}]", f"duplicate backend {b.key} (first at backends[{seen[key]}])")
            else:
                seen[key] = k

    def _tcp_only(self, sp: str, s: Service) -> None:
        """TCP settings on a UDP service. (A VIP's protection settings reach only its TCP services,
        so a VIP with TCP and UDP services may set them.)"""
        if s.toa:
            self.add(f"{sp}.toa", "TOA applies to TCP services only")
        pr = s.protection
        if pr is None:
            return
        if pr.syn_proxy not in (None, "off"):
            self.add(f"{sp}.protection.syn_proxy", f"syn_proxy {pr.syn_proxy} applies to TCP services only (use off)")
        for name in ("auto_half_open", "auto_syn_rate"):
            if getattr(pr, name) is not None:
                self.add(f"{sp}.protection.{name}", f"{name} is a SYN proxy threshold, for TCP services only")
        if pr.rst_unknown:
            self.add(f"{sp}.protection.rst_unknown", "rst_unknown answers TCP segments, for TCP services only")

    def _probe(self, mp: str, m: MonitorProbe, endpoints: dict[tuple[int, str], int], names: set[str]) -> None:
        if m.probe_name in names:
            self.add(f"{mp}.name", f"duplicate monitor probe name {m.probe_name!r}")
        names.add(m.probe_name)
        if (m.port, m.protocol) not in endpoints:
            self.add(f"{mp}.port", f"the VIP has no {m.protocol} service on port {m.port}")
        if m.timeout > m.interval:
            self.add(f"{mp}.timeout", f"timeout {m.timeout:g}s is longer than the interval {m.interval:g}s")
        self._params(mp, m.kind, m.http, m.payload)

    # --- limits ---

    def _limits(self) -> None:
        doc = self.doc
        n_services = sum(len(v.services) for v in doc.vips)
        known = self.memo_vips_next
        n_backends = sum(
            known[id(v)][2] if id(v) in known else sum(len(s.backends) for s in v.services) for v in doc.vips
        )
        if n_services > Limits.SERVICES:
            self.add("vips", f"{n_services} services; the limit is {Limits.SERVICES}")
        if n_backends > Limits.BACKENDS:
            self.add("vips", f"{n_backends} backends; the limit is {Limits.BACKENDS}")
        per_node_services: Counter[str] = Counter()
        per_node_backends: Counter[str] = Counter()
        serving = ServingNodes(doc)
        for v in doc.vips:
            primary, standby = serving(v)
            backends = known[id(v)][2] if id(v) in known else sum(len(s.backends) for s in v.services)
            for nid in (*primary, *standby):
                per_node_services[nid] += len(v.services)
                per_node_backends[nid] += backends
        for i, n in enumerate(doc.nodes):
            if per_node_services[n.id] > Limits.NODE_SERVICES:
                self.add(
                    f"nodes[{i}]",
                    f"node {n.id} would serve {per_node_services[n.id]} services; a forwarder holds at most "
                    f"{Limits.NODE_SERVICES}",
                )
            if per_node_backends[n.id] > Limits.NODE_BACKENDS:
                self.add(
                    f"nodes[{i}]",
                    f"node {n.id} would serve {per_node_backends[n.id]} backends; a forwarder holds at most "
                    f"{Limits.NODE_BACKENDS}",
                )
        self._budgets()

    def _budgets(self) -> None:
        """Each node's forwarder must fit its memory budget (vgw.config.budget)."""
        cache = self.memo.costs if self.memo is not None else None
        costs = node_costs(self.doc, cache)
        if self.memo is not None and cache is not None:
            # only this document's VIPs stay: bounded, without a periodic full recompute
            self.memo.costs = {id(v): hit for v in self.doc.vips if (hit := cache.get(id(v))) is not None}
        for i, n in enumerate(self.doc.nodes):
            why = over_budget(n, costs[n.id])
            if why is not None:
                self.add(f"nodes[{i}].forwarder.memory_budget", why)


def semantic_issues(doc: ConfigDocument, memo: CheckMemo | None = None) -> list[Issue]:
    """Problems that relate objects to each other (a structurally valid document is assumed).
    A follower re-checking revision after revision passes the same ``memo`` each time."""
    with gc_paused():
        return _Checker(doc, memo).run()


# --- warnings -------------------------------------------------------------------------------------


def _node_names(ids: list[str]) -> str:
    shown = ", ".join(ids[:3])
    more = f" and {len(ids) - 3} more" if len(ids) > 3 else ""
    return f"node{'s' if len(ids) > 1 else ''} {shown}{more}"


def _lip_count(node: Node) -> int:
    try:
        return len(forwarder_lips(node.lips())[0])
    except ValueError:  # a LIP prefix too large: an error of its own
        return 0


def connection_capacity(lips: int, backends: int) -> int:
    """Connections a service can have open at once on a node with ``lips`` LIPs to ``backends``
    backends: every (LIP, backend) pair has :attr:`Limits.LIP_PORTS` source ports."""
    return lips * backends * Limits.LIP_PORTS


def document_warnings(doc: ConfigDocument) -> list[Issue]:
    """What is valid but likely wrong in a valid document, each with a path and a reason:

    * a service's ``expected_connections`` (per node) exceeds what a node serving it can hold:
      (the node's LIPs the forwarder takes) x (backends that take new connections: enabled, weight
      > 0, IPv4) x :attr:`Limits.LIP_PORTS`;
    * the services a node serves expect more connections together than its connection tables hold
      (``forwarder.workers`` x ``forwarder.conn_capacity``).
    """
    out: list[Issue] = []
    nodes: dict[str, tuple[int, Node]] = {}
    for i, n in enumerate(doc.nodes):
        nodes.setdefault(n.id, (i, n))
    lips: dict[str, int] = {}
    expected: dict[str, int] = dict.fromkeys(nodes, 0)
    serving = ServingNodes(doc)
    for vi, v in enumerate(doc.vips):
        wanted = [s for s in v.services if s.expected_connections is not None]
        if not wanted:
            continue
        primary, standby = serving(v)
        ids = [nid for nid in dict.fromkeys((*primary, *standby)) if nid in nodes]
        for nid in ids:
            if nid not in lips:
                lips[nid] = _lip_count(nodes[nid][1])
        for sj, s in enumerate(v.services):
            want = s.expected_connections
            if want is None:
                continue
            for nid in ids:
                expected[nid] += want
            backends = sum(1 for b in forwarder_backends(s) if b.state == "enabled" and b.weight > 0)
            short = sorted((connection_capacity(lips[nid], backends), nid) for nid in ids)
            short = [(cap, nid) for cap, nid in short if cap < want]
            if not short:
                continue
            cap, worst = short[0]
            out.append(
                Issue(
                    f"vips[{vi}].services[{sj}].expected_connections",
                    f"service {s.name} expects {want} connections per node, but {_node_names([n for _, n in short])} "
                    f"can hold at most {cap} ({lips[worst]} LIPs x {backends} backends x {Limits.LIP_PORTS} source "
                    f"ports on node {worst}): add LIPs to the node's lip_pool, or backends",
                )
            )
    for nid, (i, n) in nodes.items():
        hold = n.forwarder.workers * n.forwarder.conn_capacity
        if expected[nid] > hold:
            out.append(
                Issue(
                    f"nodes[{i}].forwarder.conn_capacity",
                    f"the services node {nid} serves expect {expected[nid]} connections together, but its connection "
                    f"tables hold {hold} ({n.forwarder.workers} workers x {n.forwarder.conn_capacity}): raise "
                    "conn_capacity or workers (within the memory budget)",
                )
            )
    if len(out) > MAX_WARNINGS:
        rest = len(out) - MAX_WARNINGS
        out = [*out[:MAX_WARNINGS], Issue("", f"... and {rest} more warnings")]
    return out
