"""What the lab is made of: namespaces, links and addresses, derived from one short lab id.

    client ns ---- router ns (BIRD, ECMP) ==== br-ext ==== node-a ns  (vgw-fwd ext)
    198.18.0.2      198.18.0.1 / 192.0.2.1          \\===== node-b ns  (vgw-fwd ext)
                                                     \\==== monitor ns 192.0.2.50
    node-a ns (vgw-fwd int) ==== br-int (switch ns) ==== backend ns x3 (198.51.100.21-23)
    node-b ns (vgw-fwd int) ====/                   \\=== healthcheck ns 198.51.100.5

    198.18.128.0/17: the syn-flood scenario's spoofed sources, routed to the client ns, dropped there

The addresses match docs/config-example.yaml, which the lab applies. Only documentation and
benchmark ranges are used. NATS and every service run in the root namespace on loopback; the
forwarders and ExaBGP run in their node's namespace, healthcheck and monitor probe from theirs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROUTER_EXT = "192.0.2.1"
ROUTER_CLIENT = "198.18.0.1"
CLIENT = "198.18.0.2"
MONITOR = "192.0.2.50"
HEALTHCHECK = "198.51.100.5"
ROUTER_ASN = 65000
NODES = {"a": ("node-a", "192.0.2.11"), "b": ("node-b", "192.0.2.12")}
BACKENDS = {1: "198.51.100.21", 2: "198.51.100.22", 3: "198.51.100.23"}
SPARE_BACKEND = (4, "198.51.100.24")  # started, not in the config: the config-change scenario adds it
# The syn-flood scenario's spoofed source addresses (benchmark range, used by nothing else): the
# router routes them back to the client namespace, which drops them (a blackhole route), so the
# SYN-ACKs the flood provokes stay inside the lab and are never answered.
FLOOD_SOURCES = "198.18.128.0/17"
VIP = "203.0.113.10"
VIP_PORT = 80
BACKEND_HTTP_PORT = 8080

_ID = re.compile(r"^[a-z0-9]{1,4}$")


@dataclass(frozen=True)
class Plan:
    id: str

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise ValueError(f"lab id {self.id!r}: use 1-4 characters a-z 0-9")

    @property
    def prefix(self) -> str:
        return f"vl{self.id}"

    # namespaces
    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    @property
    def router(self) -> str:
        return self.ns("router")

    @property
    def client(self) -> str:
        return self.ns("client")

    @property
    def switch(self) -> str:
        return self.ns("switch")

    @property
    def monitor(self) -> str:
        return self.ns("monitor")

    @property
    def healthcheck(self) -> str:
        return self.ns("hc")

    def node(self, n: str) -> str:
        return self.ns(f"node{n}")

    def backend(self, i: int) -> str:
        return self.ns(f"be{i}")

    def namespaces(self) -> list[str]:
        return [
            self.router, self.client, self.switch, self.monitor, self.healthcheck,
            *(self.node(n) for n in NODES), *(self.backend(i) for i in [*BACKENDS, SPARE_BACKEND[0]]),
        ]  # fmt: skip

    # interfaces (<= 15 characters): <prefix><role>, and <prefix><role>p for the peer end
    def ifname(self, role: str) -> str:
        name = f"{self.prefix}{role}"
        assert len(name) <= 14, name
        return name

    def node_ext(self, n: str) -> str:
        return self.ifname(f"{n}e")

    def node_int(self, n: str) -> str:
        return self.ifname(f"{n}i")

    # files and processes
    @property
    def file_prefix(self) -> str:
        return f"vgwlab-{self.id}"
