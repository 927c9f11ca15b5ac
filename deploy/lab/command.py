"""``vgwctl lab``: the one-machine lab (docs/lab.md). The lab adds this command to vgwctl through the
``vgwctl.commands`` entry point (pyproject.toml, vgw/cli/plugins.py): vgw/ imports nothing above it."""

from __future__ import annotations

import argparse
from typing import Any

# docs/lab.md "A NATS cluster"; the sizes are deploy/lab/lab.py's NATS_CLUSTER_SIZES (not imported: root-only)
NATS_CLUSTER_ARG: dict[str, Any] = {
    "type": int, "choices": (1, 3, 5), "default": 1, "metavar": "N",
    "help": "run NATS as a cluster of N servers (1, 3 or 5) with JetStream replicas min(N, 3) (default: 1)",
}  # fmt: skip


def add_parser(sub: Any) -> None:
    p = sub.add_parser("lab", help="run VGW in network namespaces on this machine (root)")
    p.add_argument("--id", default="lab", help="lab id, 1-4 characters a-z 0-9 (default: lab)")
    lsub = p.add_subparsers(dest="lab_command", required=True, metavar="SUBCOMMAND")
    insecure_help = "INSECURE: NATS and the config API without authentication (local experiments only)"
    up = lsub.add_parser("up", help="build the lab and wait until the VIP is served")
    up.add_argument("--insecure", action="store_true", help=insecure_help)
    up.add_argument("--nats-cluster", **NATS_CLUSTER_ARG)
    up.set_defaults(func=run)
    lsub.add_parser("down", help="remove everything the lab created").set_defaults(func=run)
    s = lsub.add_parser("status", help="a live view: VIPs, announcements, backend health, traffic, events")
    s.add_argument("--watch", action="store_true", help="refresh every 2 s until interrupted")
    s.add_argument("-o", "--output", choices=["table", "json"], default="table")
    s.set_defaults(func=run)
    sc = lsub.add_parser("scenario", help="run a scenario with steady client traffic and report what clients saw")
    sc.add_argument(
        "name",
        help="short requests: backend-failure, node-failure, node-isolate, config-change, monitor-blackhole, "
        "syn-flood; long-lived connections (issue #16): ll-config-change, ll-node-isolate, ll-node-drain, "
        "ll-forwarder-restart, ll-forwarder-upgrade, ll-node-failure, ll-node-failure-nosync; or a family: "
        "requests, longlived, all (both)",
    )
    sc.add_argument("-o", "--output", choices=["table", "json"], default="table")
    sc.add_argument("--html", metavar="FILE", help="also write the report as one self-contained HTML page")
    sc.set_defaults(func=run)
    c = lsub.add_parser(
        "chaos",
        help="kill, pause or cut one process or link at a time under client traffic; report what each did",
        description='The chaos suite (docs/lab.md, "Chaos"): each fault in turn under steady client traffic, '
        "then the report table; exits 1 when a fault broke its bound. Runs on the lab when it is up; "
        "otherwise brings one up and takes it down afterwards.",
    )
    fault_help = "a fault by its name in the report, e.g. 'kill -9 shim-a' (repeatable; default: all)"
    c.add_argument("--fault", action="append", default=[], metavar="NAME", help=fault_help)
    c.add_argument("--short", action="store_true", help="the short set make test runs")
    c.add_argument("-o", "--output", choices=["table", "json"], default="table")
    c.set_defaults(func=run)
    d = lsub.add_parser("demo", help="up, every scenario of both families, the report, down")
    d.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    d.add_argument("--html", metavar="FILE", help="also write the report as one self-contained HTML page")
    d.add_argument("--insecure", action="store_true", help=insecure_help)
    d.add_argument("--nats-cluster", **NATS_CLUSTER_ARG)
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: the lab (and its root-only tooling) is not needed by any other command.
    from deploy.lab.cli import main as lab_main

    result: int = lab_main(args)
    return result
