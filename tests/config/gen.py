"""Generated configuration documents of any size (tests and the benchmark)."""

from __future__ import annotations

import math
from typing import Any


def generate(services: int, backends: int = 10, services_per_vip: int = 10) -> dict[str, Any]:
    """A valid document with ``services`` services of ``backends`` backends each. Clusters of two
    nodes are added as needed so no node exceeds the forwarder's limits (4096 services, 65536
    backends). A node holding up to 4090 Maglev services of the default table size needs about
    640 MiB (vgw.config.budget), so every node gets a memory budget of 1 GiB."""
    per_cluster = min(4096, 65536 // max(1, backends))
    per_cluster -= per_cluster % services_per_vip
    n_clusters = max(1, math.ceil(services / per_cluster))
    clusters = [{"name": f"c{c}"} for c in range(n_clusters)]
    nodes = []
    for c in range(n_clusters):
        for k in range(2):
            n = c * 2 + k
            nodes.append(
                {
                    "id": f"n{n}",
                    "cluster": f"c{c}",
                    "mode": "single_arm",
                    "external": {"address": f"192.0.2.{n + 10}/24", "gateway": "192.0.2.1"},
                    "lip_pool": [f"203.0.113.{n + 10}"],
                    "forwarder": {"memory_budget": "1Gi"},
                    "bgp": {
                        "asn": 65010,
                        "router_id": f"192.0.2.{n + 10}",
                        "peers": [{"address": "192.0.2.1", "asn": 65000}],
                    },
                }
            )
    vips = []
    n_vips = math.ceil(services / services_per_vip)
    s = 0
    for v in range(n_vips):
        svcs = []
        for k in range(min(services_per_vip, services - s)):
            base = s * backends
            svcs.append(
                {
                    "name": f"s{s}",
                    "port": 80 + k,
                    "health_check": "tcp",
                    "backends": [
                        {"address": f"198.19.{(base + j) // 250 % 250}.{(base + j) % 250 + 1}", "port": 8000 + k}
                        for j in range(backends)
                    ],
                }
            )
            s += 1
        vips.append(
            {
                "address": f"198.18.{v // 250}.{v % 250 + 1}",
                "cluster": f"c{v * services_per_vip // per_cluster}",
                "services": svcs,
            }
        )
    return {
        "version": 1,
        "clusters": clusters,
        "nodes": nodes,
        "health_checks": [{"name": "tcp", "kind": "tcp", "interval": "2s", "timeout": "1s"}],
        "vips": vips,
    }
