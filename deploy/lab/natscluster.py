"""The lab's NATS as a cluster (``vgwctl lab up --nats-cluster 3``): one configuration file per
server, each on its own client port, route port and JetStream store, all on loopback.

The servers are secured like the lab's single one: each file includes the ``tls.conf`` and
``authorization.conf`` that ``vgwctl security init`` wrote (so it lives next to them), and the routes
between the servers need a user and password made for this lab (the files are 0600). An
``--insecure`` lab leaves out TLS and client authentication, never the routes' password.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from vgw.security import natsconf

ROUTE_USER = "route"


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    port: int
    route_port: int
    store_dir: Path
    conf: Path


def plan(lab_id: str, conf_dir: Path, store_root: Path, ports: list[int], route_ports: list[int]) -> list[Server]:
    """Server ``i`` listens for clients on ``ports[i]`` and for its peers on ``route_ports[i]``."""
    if len(ports) != len(route_ports) or len(ports) < 2:
        raise ValueError("a NATS cluster needs at least two servers, each with a client and a route port")
    return [
        Server(f"vgw-lab-{lab_id}-{i}", p, rp, store_root / f"jetstream-{i}", conf_dir / f"nats-server-{i}.conf")
        for i, (p, rp) in enumerate(zip(ports, route_ports, strict=True))
    ]


def write(servers: list[Server], cluster_name: str, secure: bool) -> None:
    """Write each server's configuration file (0600: it holds the routes' password)."""
    password = secrets.token_hex(16)
    for s in servers:
        routes = [f"nats-route://{ROUTE_USER}:{password}@127.0.0.1:{p.route_port}" for p in servers if p is not s]
        if secure:
            head = natsconf.server(f"127.0.0.1:{s.port}", str(s.store_dir), s.name)
        else:
            head = (
                f"server_name: {json.dumps(s.name)}\nlisten: {json.dumps(f'127.0.0.1:{s.port}')}\n"
                f"jetstream {{\n  store_dir: {json.dumps(str(s.store_dir))}\n}}\n"
            )
        body = (
            f"{head}"
            "cluster {\n"
            f"  name: {json.dumps(cluster_name)}\n"
            f"  listen: {json.dumps(f'127.0.0.1:{s.route_port}')}\n"
            f"  authorization {{\n    user: {json.dumps(ROUTE_USER)}\n    password: {json.dumps(password)}\n  }}\n"
            f"  routes: [{', '.join(json.dumps(r) for r in routes)}]\n"
            "}\n"
        )
        s.conf.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(s.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(body)
