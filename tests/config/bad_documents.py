"""The table of bad documents: each is the example document with one thing broken, the path the
error must name and a fragment of its reason. Used over the library, gRPC and vgwctl."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "config-example.yaml"


def example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


@dataclass(frozen=True)
class Bad:
    id: str
    mutate: Callable[[dict[str, Any]], Any]
    path: str
    reason: str

    def text(self) -> str:
        """The broken document as text (YAML, or raw text when ``mutate`` returns a string)."""
        doc = copy.deepcopy(example())
        out = self.mutate(doc)
        if isinstance(out, str):
            return out
        return yaml.safe_dump(doc, sort_keys=False)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set a value by a path like ``vips[0].services[1].port``."""

    def mutate(doc: dict[str, Any]) -> None:
        obj: Any = doc
        parts = path.replace("[", ".[").split(".")
        for part in parts[:-1]:
            obj = obj[int(part[1:-1])] if part.startswith("[") else obj[part]
        last = parts[-1]
        if last.startswith("["):
            obj[int(last[1:-1])] = value
        else:
            obj[last] = value

    return mutate


def _fn(f: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    return f


def _dup_vip_port(doc: dict[str, Any]) -> None:
    svc = copy.deepcopy(doc["vips"][0]["services"][0])
    svc["name"] = "www-http-again"
    doc["vips"][0]["services"].append(svc)


def _dup_service_name(doc: dict[str, Any]) -> None:
    doc["vips"][1]["services"][0]["name"] = "www-http"


def _dup_backend(doc: dict[str, Any]) -> None:
    b = doc["vips"][0]["services"][0]["backends"]
    b.append(dict(b[0]))


def _dup_vip(doc: dict[str, Any]) -> None:
    doc["vips"][1]["address"] = doc["vips"][0]["address"]


def _dup_node(doc: dict[str, Any]) -> None:
    doc["nodes"][1]["id"] = "node-a"


def _lip_overlap_node(doc: dict[str, Any]) -> None:
    doc["nodes"][1]["lip_pool"] = ["198.51.100.102"]


def _huge(_: dict[str, Any]) -> str:
    return "version: 1\n# " + "x" * (50 * 1024 * 1024) + "\n"


def _bomb(_: dict[str, Any]) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("version: 1")
    return "\n".join(lines) + "\n"


BAD: list[Bad] = [
    Bad("bad-vip-ip", _set("vips[0].address", "203.0.113.300"), "vips[0].address", "not an IPv4 or IPv6 address"),
    Bad(
        "bad-backend-ip",
        _set("vips[0].services[0].backends[1].address", "198.51.100"),
        "vips[0].services[0].backends[1].address",
        "not an IPv4 or IPv6 address",
    ),
    Bad("port-0", _set("vips[0].services[0].port", 0), "vips[0].services[0].port", "greater than or equal to 1"),
    Bad("port-70000", _set("vips[1].services[0].port", 70000), "vips[1].services[0].port", "less than or equal"),
    Bad(
        "backend-port-70000",
        _set("vips[0].services[0].backends[0].port", 70000),
        "vips[0].services[0].backends[0].port",
        "less than or equal to 65535",
    ),
    Bad("dup-vip-port", _fn(_dup_vip_port), "vips[0].services[3].port", "duplicate VIP:port/protocol"),
    Bad("dup-service-name", _fn(_dup_service_name), "vips[1].services[0].name", "duplicate service name"),
    Bad("dup-backend", _fn(_dup_backend), "vips[0].services[0].backends[3]", "duplicate backend"),
    Bad("dup-vip", _fn(_dup_vip), "vips[1].address", "duplicate VIP address"),
    Bad("dup-node", _fn(_dup_node), "nodes[1].id", "duplicate node id"),
    Bad(
        "dangling-check",
        _set("vips[0].services[0].health_check", "nope"),
        "vips[0].services[0].health_check",
        "unknown health check",
    ),
    Bad("dangling-cluster-node", _set("nodes[0].cluster", "mars"), "nodes[0].cluster", "unknown cluster"),
    Bad("dangling-cluster-vip", _set("vips[1].cluster", "mars"), "vips[1].cluster", "unknown cluster"),
    Bad("dangling-vip-node", _set("vips[0].nodes", ["node-a", "node-z"]), "vips[0].nodes[1]", "unknown node"),
    Bad("dangling-standby", _set("clusters[0].standby", "dr"), "clusters[0].standby", "unknown cluster"),
    Bad(
        "sync-off-segment",
        _set("nodes[1].internal.address", "198.18.7.12/24"),
        "nodes[1].internal.address",
        "must share a subnet with nodes[0]",
    ),
    Bad("sync-port-low", _set("clusters[0].conn_sync.port", 80), "clusters[0].conn_sync.port", "greater than"),
    Bad(
        "sync-unknown-field", _set("clusters[0].conn_sync.peers", ["x"]), "clusters[0].conn_sync.peers", "unknown field"
    ),
    Bad("lip-is-vip", _set("nodes[0].lip_pool[1]", "203.0.113.10"), "nodes[0].lip_pool[1]", "also the VIP"),
    Bad(
        "lip-prefix-covers-vip",
        _set("nodes[1].lip_pool[0]", "203.0.113.8/29"),
        "nodes[1].lip_pool[0]",
        "also the VIP",
    ),
    Bad("lip-pools-overlap", _fn(_lip_overlap_node), "nodes[1].lip_pool[0]", "must be disjoint"),
    Bad(
        "weight-minus-1",
        _set("vips[0].services[0].backends[0].weight", -1),
        "vips[0].services[0].backends[0].weight",
        "greater than or equal to 0",
    ),
    Bad("rise-0", _set("health_checks[0].rise", 0), "health_checks[0].rise", "greater than or equal to 1"),
    Bad("fall-string", _set("health_checks[0].fall", "three"), "health_checks[0].fall", "valid integer"),
    Bad("unknown-field-top", _set("vipz", []), "vipz", "unknown field"),
    Bad(
        "unknown-field-backend",
        _set("vips[0].services[0].backends[0].wieght", 5),
        "vips[0].services[0].backends[0].wieght",
        "unknown field",
    ),
    Bad("huge-document", _fn(_huge), "document", "the limit is"),
    Bad("alias-bomb", _fn(_bomb), "document", "YAML aliases"),
    Bad("yaml-syntax", _fn(lambda _: "vips: [\n  - {address: 1\n"), "document", "YAML syntax error"),
    Bad("not-a-mapping", _fn(lambda _: "- just\n- a list\n"), "document", "expected a mapping"),
    Bad("port-as-list", _set("vips[0].services[0].port", [80]), "vips[0].services[0].port", "valid integer"),
    Bad("port-as-string", _set("vips[0].services[0].port", "80"), "vips[0].services[0].port", "valid integer"),
    Bad(
        "enabled-as-string",
        _set("vips[0].enabled", "yes-please"),
        "vips[0].enabled",
        "valid boolean",
    ),
    Bad(
        "forwarding-dr",
        _set("vips[0].services[0].forwarding", "dr"),
        "vips[0].services[0].forwarding",
        "not supported yet",
    ),
    Bad(
        "forwarding-bogus",
        _set("vips[0].services[0].forwarding", "magic"),
        "vips[0].services[0].forwarding",
        "'fullnat', 'dr' or 'tun'",
    ),
    Bad(
        "scheduler-bogus",
        _set("vips[0].services[0].scheduler", "random"),
        "vips[0].services[0].scheduler",
        "'maglev', 'wrr' or 'wlc'",
    ),
    Bad("bad-name", _set("vips[1].services[0].name", "api tcp!"), "vips[1].services[0].name", "not a valid name"),
    Bad("timeout-gt-interval", _set("health_checks[1].timeout", "5s"), "health_checks[1].timeout", "longer than"),
    Bad("bad-duration", _set("health_checks[1].interval", "soon"), "health_checks[1].interval", "not a duration"),
    Bad("bad-cidr", _set("nodes[1].lip_pool[0]", "198.51.100.105/30"), "nodes[1].lip_pool[0]", "host bits set"),
    Bad(
        "gateway-off-subnet",
        _set("nodes[0].external.gateway", "203.0.113.1"),
        "nodes[0].external.gateway",
        "not in 192.0.2.0/24",
    ),
    Bad("dual-arm-no-internal", _set("nodes[0].internal", None), "nodes[0].internal", "needs an internal port"),
    Bad("hold-time-2", _set("nodes[0].bgp.peers[0].hold_time", 2), "nodes[0].bgp.peers[0].hold_time", "at least 3"),
    # ExaBGP refuses a session whose source is of another family, and with it the node's whole
    # configuration: every other session of the node would go down too.
    Bad(
        "peer-v6-from-v4-external",
        _set("nodes[0].bgp.peers[0].address", "2001:db8::1"),
        "nodes[0].bgp.peers[0].local_address",
        "set local_address to an IPv6 address of this node",
    ),
    Bad(
        "peer-local-address-family",
        _set("nodes[0].bgp.peers[0].local_address", "2001:db8::5"),
        "nodes[0].bgp.peers[0].local_address",
        "a session has one family",
    ),
    Bad("asn-0", _set("nodes[0].bgp.asn", 0), "nodes[0].bgp.asn", "greater than or equal to 1"),
    Bad("community-bad", _set("vips[0].bgp.communities", ["65000:70000"]), "vips[0].bgp.communities[0]", "0-65535"),
    Bad(
        "watermarks-inverted",
        _set("vips[0].bgp.low_watermark", 5),
        "vips[0].bgp.high_watermark",
        "below the low watermark",
    ),
    Bad(
        "status-range",
        _set("health_checks[0].http.expected_status", ["299-200"]),
        "health_checks[0].http.expected_status[0]",
        "not an HTTP status",
    ),
    Bad("multicast-vip", _set("vips[1].address", "224.0.0.5"), "vips[1].address", "multicast"),
    Bad("ipv6-vip", _set("vips[1].address", "2001:db8::10"), "vips[1].address", "IPv6 is not supported"),
    Bad("udp-toa", _set("vips[0].services[1].toa", True), "vips[0].services[1].toa", "TCP services only"),
    Bad("monitor-port", _set("vips[0].monitor[0].port", 8080), "vips[0].monitor[0].port", "no tcp service"),
    Bad("http-params-on-tcp", _set("health_checks[1].http", {"path": "/"}), "health_checks[1].http", "only apply"),
    Bad(
        "send-expect-no-payload", _set("health_checks[1].kind", "tcp_send_expect"), "health_checks[1].payload", "needs"
    ),
    Bad("no-services", _set("vips[1].services", []), "vips[1].services", "at least 1 item"),
    Bad("version-2", _set("version", 2), "version", "Input should be 1"),
    Bad(
        "udp-syn-proxy",
        _set("vips[0].services[1].protection", {"syn_proxy": "on"}),
        "vips[0].services[1].protection.syn_proxy",
        "syn_proxy on applies to TCP services only",
    ),
    Bad(
        "syn-proxy-threshold-zero",
        _set("vips[0].protection", {"auto_half_open": 0}),
        "vips[0].protection.auto_half_open",
        "greater than or equal to 1",
    ),
    Bad(
        "over-memory-budget",
        _set("nodes[0].forwarder", {"memory_budget": "64Mi"}),
        "nodes[0].forwarder.memory_budget",
        "node node-a needs 101.4 MiB (106322496 bytes: scheduler tables 136 KiB for 4 services, connection tables "
        "37.1 MiB for 1 worker x 262144 connections, service structures 10.6 KiB, base 64 MiB, transient 132 KiB), "
        "more than its memory budget of 64 MiB (67108864 bytes): raise the budget",
    ),
    Bad(
        "conn-tables-over-budget",
        _set("nodes[1].forwarder", {"workers": 16, "conn_capacity": 1048576, "memory_budget": "2Gi"}),
        "nodes[1].forwarder.memory_budget",
        "node node-b needs 2.3 GiB (2451855936 bytes: scheduler tables 136 KiB for 4 services, connection tables "
        "2.2 GiB for 16 workers x 1048576 connections",
    ),
    Bad(
        "memory-budget-unit",
        _set("nodes[1].forwarder", {"memory_budget": "512MB"}),
        "nodes[1].forwarder.memory_budget",
        "'512MB' is not a byte quantity",
    ),
    Bad(
        "memory-budget-too-small",
        _set("nodes[0].forwarder", {"memory_budget": "32Mi"}),
        "nodes[0].forwarder.memory_budget",
        "out of range: 64 MiB to 1 TiB",
    ),
    Bad("workers-0", _set("nodes[0].forwarder", {"workers": 0}), "nodes[0].forwarder.workers", "greater than or equal"),
    Bad("json-syntax", _fn(lambda _: '{"version": 1, "vips": [}'), "document", "JSON syntax error"),
    Bad("json-wrong-type", _fn(lambda _: json.dumps({"version": 1, "vips": {"a": 1}})), "vips", "valid list"),
]
