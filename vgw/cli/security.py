"""``vgwctl security init DIR``: the CA, certificates, NATS configuration with the permission
matrix, per-identity credentials and the config API's certificates and tokens (docs/security.md).

Exit codes: 0 done or already up to date; 1 refused (files would change: run with --force);
2 bad arguments. Nothing is written unless the whole run can be done.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vgw.security import DEFAULT_HOSTS, DEFAULT_NATS_URL, InitError, InitResult, Status, init_dir

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "security",
        help="secure a deployment: CA, certificates, NATS permissions, credentials",
        description="Generate what a secured deployment needs (docs/security.md).",
    )
    ssub = p.add_subparsers(dest="security_command", required=True, metavar="SUBCOMMAND")
    init = ssub.add_parser(
        "init",
        help="create or update a security directory (idempotent; refuses to overwrite without --force)",
        description="Create DIR with a CA, the NATS server's TLS and authorization configuration (one nkey "
        "user per identity with least-privilege permissions), one client certificate, nkey seed and vgw.env "
        "per identity, and the config API's certificate and tokens. Re-running with the same inputs changes "
        "nothing; a run that would change an existing file is refused unless --force, which keeps the CA "
        "and every key and certificate that still fits.",
    )
    init.add_argument("directory", metavar="DIR")
    init.add_argument("--node", action="append", default=[], metavar="NAME", help="a node id (repeatable)")
    init.add_argument("--config", metavar="FILE", help="a config document: its nodes are added to --node")
    hosts = ", ".join(DEFAULT_HOSTS)
    init.add_argument(
        "--nats-host", action="append", default=[], metavar="H", help=f"SAN of NATS's certificate ({hosts})"
    )
    init.add_argument(
        "--config-api-host",
        action="append",
        default=[],
        metavar="H",
        help=f"SAN of the config API's certificate ({hosts})",
    )
    init.add_argument("--nats-url", default=DEFAULT_NATS_URL, help=f"VGW_NATS_URL in vgw.env ({DEFAULT_NATS_URL})")
    init.add_argument(
        "--path-prefix", metavar="P", help="where DIR will be on the hosts: paths in vgw.env, tls.conf (DIR)"
    )
    init.add_argument("--store-dir", metavar="D", help="JetStream store of nats-server.conf (P/nats/data)")
    init.add_argument("--force", action="store_true", help="update what changed; keeps the CA and fitting keys")
    init.set_defaults(func=run_init)


def run_init(args: argparse.Namespace) -> int:
    try:
        result = init_dir(
            args.directory,
            args.node,
            config_file=args.config,
            nats_hosts=args.nats_host,
            config_api_hosts=args.config_api_host,
            nats_url=args.nats_url,
            path_prefix=args.path_prefix,
            store_dir=args.store_dir,
            force=args.force,
        )
    except InitError as exc:
        print(f"vgwctl security init: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return report(result)


def report(r: InitResult) -> int:
    d = r.directory
    if r.refused:
        print(
            "vgwctl security init: refused, these files would change (nothing written; --force to update):",
            file=sys.stderr,
        )
        for path in r.refused:
            print(f"  {d / path}", file=sys.stderr)
        return EXIT_REFUSED
    for status in (Status.CREATED, Status.UPDATED):
        for path in r.with_status(status):
            print(f"{status.value:8} {d / path}")
    kept = r.with_status(Status.KEPT)
    if r.written:
        if kept:
            print(f"kept     {len(kept)} existing key, certificate, seed and token files")
        print(f"{d}: {len(r.identities)} identities ({', '.join(r.identities)})")
    else:
        print(f"{d} is up to date ({len(r.files)} files, {len(r.identities)} identities)")
    for path in r.stale:
        print(f"note: {d / path} belongs to no identity any more (its NATS user is gone); remove it")
    return EXIT_OK
