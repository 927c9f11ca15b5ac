"""vgwctl commands of the config service: apply, diff, get, list, history, rollback, backend,
node, status. They talk to ``vgw.config.v1.ConfigService`` at ``--config-addr`` (default
``$VGW_CONFIG_ADDR`` or ``127.0.0.1:50051``), with the credentials of the flags or of
``VGW_CONFIG_TLS_CA``, ``VGW_CONFIG_CLIENT_CERT``/``_KEY``, ``VGW_CONFIG_TOKEN`` or
``VGW_CONFIG_TOKEN_FILE``, ``VGW_CONFIG_TLS_SERVER_NAME`` (an ``identities/<id>/vgw.env`` of
``vgwctl security init`` sets them).

Exit codes (docs/vgwctl.md): 0 ok, 1 failure, 2 bad usage, 3 config service unreachable,
4 invalid configuration (nothing changed), 5 revision conflict (nothing changed), 6 not found.
``diff`` answers with its status as diff(1) and ``kubectl diff`` do: 0 no differences, 1 differences;
its failures are all above 1 (7 where another command says 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from vgw.config.client import ConfigApiError, ConfigClient
from vgw.config.model import DRAIN_THRESHOLD_DEFAULT, DRAIN_TIMEOUT_DEFAULT_S
from vgw.config.v1 import config_pb2 as pb
from vgw.duration import parse_duration

from . import drain as drain_follow
from . import runtime_view
from .common import connect, settings_from
from .output import FORMATS, emit, table

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_INVALID, EXIT_CONFLICT, EXIT_NOT_FOUND = 4, 5, 6
EXIT_DIFFERENCES, EXIT_DIFF_FAILED = 1, 7

DEFAULT_ADDR = "127.0.0.1:50051"
KINDS = ("vips", "services", "backends", "nodes", "clusters", "health_checks")
_KIND_ALIASES = {
    "vip": "vips",
    "service": "services",
    "svc": "services",
    "backend": "backends",
    "be": "backends",
    "node": "nodes",
    "cluster": "clusters",
    "check": "health_checks",
    "checks": "health_checks",
    "health-checks": "health_checks",
    "health_check": "health_checks",
}


def _common(*, call_timeout_flag: str = "--timeout") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("config service")
    g.add_argument(
        "--config-addr", metavar="HOST:PORT", help=f"ConfigService address ($VGW_CONFIG_ADDR, {DEFAULT_ADDR})"
    )
    g.add_argument("--token", metavar="TOKEN", help="bearer token ($VGW_CONFIG_TOKEN)")
    g.add_argument(
        "--token-file", metavar="FILE", type=Path, help="file holding the bearer token ($VGW_CONFIG_TOKEN_FILE)"
    )
    g.add_argument("--tls", action="store_true", help="use TLS (system roots, or --tls-ca)")
    g.add_argument(
        "--tls-ca", metavar="PEM", type=Path, help="CA of the server's certificate; implies TLS ($VGW_CONFIG_TLS_CA)"
    )
    g.add_argument(
        "--client-cert",
        metavar="PEM",
        type=Path,
        help="client certificate for mTLS; implies TLS ($VGW_CONFIG_CLIENT_CERT)",
    )
    g.add_argument("--client-key", metavar="PEM", type=Path, help="its private key ($VGW_CONFIG_CLIENT_KEY)")
    g.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="name the server's certificate must carry, when not the address's host ($VGW_CONFIG_TLS_SERVER_NAME)",
    )
    g.add_argument(
        call_timeout_flag,
        dest="call_timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="per-call timeout (default 60)",
    )
    p.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format (default table)")
    return p


def _write_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", default="", help="why (kept in the history and the config.changed event)")
    p.add_argument(
        "--expect-revision", type=int, metavar="REV", help="fail (exit 5) unless the store is at this revision"
    )


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _drain_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("drain")
    g.add_argument(
        "--timeout",
        type=_duration_arg,
        metavar="DURATION",
        help=f"drain: withdraw at the latest this long after the start (1s-24h; default {DRAIN_TIMEOUT_DEFAULT_S:g}s; "
        "e.g. 90s, 10m)",
    )
    g.add_argument(
        "--threshold",
        type=int,
        metavar="N",
        help=f"drain: idle (withdraw) once the node has fewer than N connections (default {DRAIN_THRESHOLD_DEFAULT}: "
        "none left; 0: wait for the timeout)",
    )
    g.add_argument("--no-wait", action="store_true", help="drain: return once the drain is committed")
    g.add_argument(
        "--interval", type=float, default=5.0, metavar="SECONDS", help="drain: seconds between progress lines (5)"
    )
    g.add_argument(
        "--force", action="store_true", help="drain even if that leaves a VIP with no active node to announce it"
    )


def add_parsers(sub: Any) -> None:
    common = _common()

    p = sub.add_parser(
        "apply",
        parents=[common],
        help="validate and apply a configuration document",
        description="Validate a YAML/JSON document and commit it as the next revision. With --dry-run, "
        "show what would change and change nothing. Warnings (valid but likely wrong, e.g. a service expecting "
        "more connections than its node's LIPs and backends can hold) go to stderr and do not stop the apply.",
    )
    p.add_argument("-f", "--file", required=True, metavar="FILE", help="the document ('-' for stdin)")
    p.add_argument("--dry-run", action="store_true", help="validate and show the diff only")
    _write_opts(p)
    p.set_defaults(func=_run(cmd_apply))

    p = sub.add_parser(
        "diff",
        parents=[common],
        help="differences: a document vs the current revision, or two revisions",
        description="`diff -f FILE` compares a document with the current revision; `diff REV [REV2]` compares "
        "two kept revisions (REV2 defaults to the current one). Exit status, as diff(1) and `kubectl diff`: 0 no "
        "differences, 1 differences, above 1 an error (7 where another command would exit 1).",
    )
    p.add_argument("-f", "--file", metavar="FILE", help="the document ('-' for stdin)")
    p.add_argument("revisions", nargs="*", type=int, metavar="REV")
    p.set_defaults(func=_run(cmd_diff, failure=EXIT_DIFF_FAILED))

    p = sub.add_parser(
        "get",
        parents=[common],
        help="show the whole document or one object",
        description="`get config` prints the whole document (YAML; -o json); `get KIND NAME` one object.",
    )
    p.add_argument("kind", help=f"config, or one of {', '.join(KINDS)}")
    p.add_argument("name", nargs="?", help="object key (VIP address, service, SERVICE/BACKEND, node id...)")
    p.add_argument("--revision", type=int, default=0, metavar="REV", help="a kept revision (default current)")
    p.set_defaults(func=_run(cmd_get))

    p = sub.add_parser("list", parents=[common], help="list objects of a kind")
    p.add_argument("kind", help=", ".join(KINDS))
    p.add_argument("--vip", help="only objects of this VIP")
    p.add_argument("--service", help="only backends of this service")
    p.add_argument("--node", help="only what this node serves")
    p.add_argument("--revision", type=int, default=0, metavar="REV", help="a kept revision (default current)")
    p.set_defaults(func=_run(cmd_list))

    p = sub.add_parser("history", parents=[common], help="kept revisions with who, when and why")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=_run(cmd_history))

    p = sub.add_parser("rollback", parents=[common], help="make a kept revision current again (as a new revision)")
    p.add_argument("revision", type=int, metavar="REV")
    _write_opts(p)
    p.set_defaults(func=_run(cmd_rollback))

    p = sub.add_parser(
        "backend",
        parents=[common],
        help="drain, disable or enable a backend",
        description="Set a backend's state in one service (--service) or in every service that has it. "
        "BACKEND is ADDRESS:PORT, [IPv6]:PORT, or an ADDRESS alone for every port of that address.",
    )
    p.add_argument("action", choices=("drain", "disable", "enable"))
    p.add_argument("backend", metavar="BACKEND")
    p.add_argument("--service", default="", help="only in this service")
    _write_opts(p)
    p.set_defaults(func=_run(cmd_backend))

    # `--timeout` is the drain's here; the per-call timeout is --call-timeout.
    drain_common = _common(call_timeout_flag="--call-timeout")
    p = sub.add_parser(
        "node",
        parents=[drain_common],
        help="isolate, drain or restore a node",
        description="isolate: route control withdraws every VIP of the node at once. drain: it announces them with "
        "the deprioritised BGP attributes until the node's connections fall below --threshold or --timeout passes, "
        "then withdraws them; vgwctl follows the drain and prints its progress (--no-wait: return at once). "
        "restore: back to active (ends a drain or an isolation).",
    )
    p.add_argument("action", choices=("isolate", "drain", "restore"))
    p.add_argument("node", metavar="NODE")
    _drain_opts(p)
    _write_opts(p)
    p.set_defaults(func=_run(cmd_node))

    p = sub.add_parser(
        "cluster",
        parents=[drain_common],
        help="drain or restore every node of a cluster",
        description="drain: every active node of the cluster drains (one revision); restore: every draining node of "
        "the cluster is active again (isolated nodes stay isolated). Draining that would leave a VIP with no "
        "active node is refused without --force (a cluster withdraw request fails a cluster over to its standby).",
    )
    p.add_argument("action", choices=("drain", "restore"))
    p.add_argument("cluster", metavar="CLUSTER")
    _drain_opts(p)
    _write_opts(p)
    p.set_defaults(func=_run(cmd_cluster))

    p = sub.add_parser("status", parents=[common], help="the configuration's current revision and summary")
    p.set_defaults(func=_run(cmd_status))


# --- plumbing ---------------------------------------------------------------------------------------


def _env_path(name: str) -> Path | None:
    v = os.environ.get(name, "").strip()
    return Path(v) if v else None


def _token(args: argparse.Namespace) -> str | None:
    """--token, --token-file, $VGW_CONFIG_TOKEN, $VGW_CONFIG_TOKEN_FILE: the first one given."""
    if args.token:
        return str(args.token)
    path = args.token_file
    if path is None and not os.environ.get("VGW_CONFIG_TOKEN"):
        path = _env_path("VGW_CONFIG_TOKEN_FILE")
    if path is None:
        return os.environ.get("VGW_CONFIG_TOKEN") or None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise _UsageError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise _UsageError(f"the token file {path} is empty")
    return token


def _client(args: argparse.Namespace) -> ConfigClient:
    addr = args.config_addr or os.environ.get("VGW_CONFIG_ADDR") or DEFAULT_ADDR
    ca = args.tls_ca or _env_path("VGW_CONFIG_TLS_CA")
    cert = args.client_cert or _env_path("VGW_CONFIG_CLIENT_CERT")
    key = args.client_key or _env_path("VGW_CONFIG_CLIENT_KEY")
    if (cert is None) != (key is None):
        raise _UsageError("--client-cert and --client-key (VGW_CONFIG_CLIENT_CERT, VGW_CONFIG_CLIENT_KEY) go together")
    for what, path in (("CA", ca), ("client certificate", cert), ("client key", key)):
        if path is not None and not path.is_file():
            raise _UsageError(f"the {what} file {path} does not exist")
    server_name = args.tls_server_name or os.environ.get("VGW_CONFIG_TLS_SERVER_NAME") or None
    return ConfigClient(
        addr,
        token=_token(args),
        tls_ca=ca,
        tls=args.tls,
        client_cert=cert,
        client_key=key,
        server_name=server_name,
        timeout_s=args.call_timeout,
    )


def _err(message: str) -> None:
    print(f"vgwctl: {message}", file=sys.stderr)


def _run(
    fn: Callable[[argparse.Namespace, ConfigClient], Awaitable[int]], *, failure: int = EXIT_FAIL
) -> Callable[[argparse.Namespace], int]:
    """``failure``: the status of a failure that has no code of its own (a command whose 1 is an
    answer, like diff's, needs another)."""

    def run(args: argparse.Namespace) -> int:
        async def go() -> int:
            async with _client(args) as c:
                return await fn(args, c)

        try:
            return asyncio.run(go())
        except ConfigApiError as exc:
            code = _api_error(exc, args)
            return failure if code == EXIT_FAIL else code
        except _UsageError as exc:
            _err(str(exc))
            return EXIT_USAGE

    return run


class _UsageError(Exception):
    pass


def _api_error(exc: ConfigApiError, args: argparse.Namespace) -> int:
    code = exc.code
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        addr = args.config_addr or os.environ.get("VGW_CONFIG_ADDR") or DEFAULT_ADDR
        _err(f"cannot reach the config service at {addr}: {exc.message}")
        if code == grpc.StatusCode.UNAVAILABLE:
            print(
                "  hint: if it serves TLS, give --tls-ca (VGW_CONFIG_TLS_CA); if it requires client certificates, "
                "--client-cert and --client-key (VGW_CONFIG_CLIENT_CERT, VGW_CONFIG_CLIENT_KEY)",
                file=sys.stderr,
            )
        return EXIT_UNREACHABLE
    if args.output != "table":
        emit(
            {
                "error": code.name,
                "message": exc.message,
                "violations": [{"path": v.path, "reason": v.reason} for v in exc.violations],
                "current_revision": exc.current_revision,
            },
            args.output,
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        if exc.violations:
            _err(f"invalid configuration, nothing changed ({len(exc.violations)} problem(s)):")
            for v in exc.violations:
                print(f"  {v}", file=sys.stderr)
        else:
            _err(exc.message)
        return EXIT_INVALID
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        if exc.violations:  # e.g. a rollback target that fails today's validation
            _err(exc.message)
            for v in exc.violations:
                print(f"  {v}", file=sys.stderr)
            return EXIT_INVALID
        _err(f"{exc.message}; nothing changed (re-read and retry, or drop --expect-revision)")
        return EXIT_CONFLICT
    if code == grpc.StatusCode.NOT_FOUND:
        _err(exc.message)
        return EXIT_NOT_FOUND
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        _err(f"{exc.message}; nothing changed")
        return EXIT_INVALID
    if code == grpc.StatusCode.UNAUTHENTICATED:
        _err(f"not authenticated: {exc.message}")
        print(
            "  hint: give a token (--token, --token-file; VGW_CONFIG_TOKEN, VGW_CONFIG_TOKEN_FILE) or a client "
            "certificate (--client-cert, --client-key; VGW_CONFIG_CLIENT_CERT, VGW_CONFIG_CLIENT_KEY); "
            "`vgwctl security init` writes them into identities/<id>/vgw.env",
            file=sys.stderr,
        )
        return EXIT_FAIL
    if code == grpc.StatusCode.PERMISSION_DENIED:
        _err(f"permission denied: {exc.message}")
        print(
            "  hint: reading needs role reader, changing needs operator or admin; the role is the client "
            "certificate's OU or the token's role in the server's tokens file (docs/config.md)",
            file=sys.stderr,
        )
        return EXIT_FAIL
    _err(f"{code.name}: {exc.message}")
    return EXIT_FAIL


def _read(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as exc:
        raise _UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _dict(msg: Message) -> dict[str, Any]:
    return MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _change_lines(changes: Any) -> list[str]:
    sign = {"added": "+", "removed": "-", "modified": "~"}
    out = []
    for c in changes:
        out.append(f"{sign.get(c.op, '?')} {c.path}")
        for f in c.fields:
            out.append(f"      {f.field}: {f.old_json} -> {f.new_json}")
    return out


def _counts(c: pb.ChangeCounts) -> str:
    return f"+{c.added} -{c.removed} ~{c.modified}"


def _apply_json(r: pb.ApplyResponse) -> dict[str, Any]:
    d = _dict(r)
    for ch in d.get("changes", []):
        for f in ch.get("fields", []):
            f["old"] = json.loads(f.pop("old_json") or "null")
            f["new"] = json.loads(f.pop("new_json") or "null")
    if not r.HasField("info"):
        d.pop("info", None)
    return d


def _apply_human(r: pb.ApplyResponse, verb: str) -> str:
    lines = _change_lines(r.changes)
    if r.changes_truncated:
        lines.append(f"  ... ({len(r.changes)} shown)")
    if r.dry_run:
        head = (
            f"dry run: no changes against revision {r.revision}"
            if not r.changes
            else f"dry run: would change {_counts(r.counts)} against revision {r.revision} (nothing applied)"
        )
    elif not r.committed:
        head = f"no changes: revision {r.revision} is current"
    else:
        head = f"{verb}: revision {r.revision} (was {r.previous_revision}), {_counts(r.counts)}"
    return "\n".join([head, *lines])


def _norm_kind(kind: str) -> str:
    k = _KIND_ALIASES.get(kind, kind)
    if k not in KINDS:
        raise _UsageError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
    return k


# --- commands ---------------------------------------------------------------------------------------


async def cmd_apply(args: argparse.Namespace, c: ConfigClient) -> int:
    data = _read(args.file)
    r, warnings = await c.apply_with_warnings(
        data, dry_run=args.dry_run, expected_revision=args.expect_revision, reason=args.reason
    )
    out = _apply_json(r)
    if warnings:  # valid but likely wrong: applied (or would be), and said on stderr too
        out["warnings"] = warnings
        for w in warnings:
            print(f"vgwctl: warning: {w}", file=sys.stderr)
    emit(out, args.output, _apply_human(r, "applied"))
    return EXIT_OK


async def cmd_diff(args: argparse.Namespace, c: ConfigClient) -> int:
    if args.file and args.revisions:
        raise _UsageError("give either -f FILE or revisions, not both")
    if args.file:
        r = await c.diff(_read(args.file))
        title = f"document vs revision {r.from_revision}"
    elif args.revisions:
        if len(args.revisions) > 2:
            raise _UsageError("at most two revisions")
        to = args.revisions[1] if len(args.revisions) == 2 else 0
        r = await c.diff(from_revision=args.revisions[0], to_revision=to)
        title = f"revision {r.from_revision} -> {r.to_revision}"
    else:
        raise _UsageError("diff needs -f FILE or REV [REV2]")
    lines = _change_lines(r.changes) or ["(no differences)"]
    d = _dict(r)
    for ch in d.get("changes", []):
        for f in ch.get("fields", []):
            f["old"] = json.loads(f.pop("old_json") or "null")
            f["new"] = json.loads(f.pop("new_json") or "null")
    emit(d, args.output, "\n".join([f"{title}: {_counts(r.counts)}", *lines]))
    differs = bool(r.changes) or r.counts.added + r.counts.removed + r.counts.modified > 0
    return EXIT_DIFFERENCES if differs else EXIT_OK


async def cmd_get(args: argparse.Namespace, c: ConfigClient) -> int:
    if args.kind in ("config", "document", "all"):
        fmt = pb.DOCUMENT_FORMAT_JSON if args.output == "json" else pb.DOCUMENT_FORMAT_YAML
        r = await c.get(args.revision, fmt)
        if r.revision == 0:
            print("# nothing applied yet (revision 0)", file=sys.stderr)
        sys.stdout.write(r.document.decode())
        if args.output == "json":
            sys.stdout.write("\n")
        return EXIT_OK
    kind = _norm_kind(args.kind)
    if not args.name:
        raise _UsageError(f"get {kind} needs a NAME (or use `vgwctl list {kind}`)")
    r2 = await c.list(kind, revision=args.revision)
    for o in r2.objects:
        if o.key == args.name:
            data = json.loads(o.json)
            emit(data, args.output if args.output != "table" else "yaml")
            return EXIT_OK
    print(
        f"vgwctl: no {kind[:-1] if kind.endswith('s') else kind} {args.name!r} at revision {r2.revision}",
        file=sys.stderr,
    )
    return EXIT_NOT_FOUND


def _rows(kind: str, objs: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    if kind == "vips":
        return ["ADDRESS", "NAME", "CLUSTER", "ENABLED", "SERVICES", "NODES", "ON_UNHEALTHY", "LOW/HIGH"], [
            [
                o["address"], o.get("name"), o["cluster"], o["enabled"], len(o["services"]),
                ",".join(o["nodes"]) if o.get("nodes") else "all", o["bgp"]["on_unhealthy"],
                f"{o['bgp']['low_watermark']}/{o['bgp']['high_watermark']}",
            ]
            for o in objs
        ]  # fmt: skip
    if kind == "services":
        return ["NAME", "VIP", "PORT", "PROTO", "SCHEDULER", "CHECK", "BACKENDS"], [
            [
                o["name"], o["vip"], o["port"], o["protocol"], o["scheduler"], o.get("health_check"),
                f"{sum(b['state'] == 'enabled' for b in o['backends'])}/{len(o['backends'])} enabled",
            ]
            for o in objs
        ]  # fmt: skip
    if kind == "backends":
        return ["SERVICE", "VIP", "BACKEND", "WEIGHT", "STATE"], [
            [o["service"], o["vip"], f"{o['address']}:{o['port']}", o["weight"], o["state"]] for o in objs
        ]
    if kind == "nodes":
        return ["ID", "CLUSTER", "MODE", "EXTERNAL", "INTERNAL", "LIP_POOL", "BGP", "STATE"], [
            [
                o["id"], o["cluster"], o["mode"], o["external"]["address"],
                (o.get("internal") or {}).get("address"), ",".join(o["lip_pool"]),
                f"AS{o['bgp']['asn']} peers={len(o['bgp']['peers'])}" if o.get("bgp") else None, o["state"],
            ]
            for o in objs
        ]  # fmt: skip
    if kind == "clusters":
        return ["NAME", "STANDBY", "DESCRIPTION"], [[o["name"], o.get("standby"), o.get("description")] for o in objs]
    return ["NAME", "KIND", "PORT", "INTERVAL", "TIMEOUT", "RISE", "FALL"], [
        [
            o["name"],
            o["kind"],
            o.get("port") or "backend",
            f"{o['interval']:g}s",
            f"{o['timeout']:g}s",
            o["rise"],
            o["fall"],
        ]
        for o in objs
    ]


async def cmd_list(args: argparse.Namespace, c: ConfigClient) -> int:
    kind = _norm_kind(args.kind)
    filters = {k: v for k, v in (("vip", args.vip), ("service", args.service), ("node", args.node)) if v}
    r = await c.list(kind, revision=args.revision, **filters)
    objs = [json.loads(o.json) for o in r.objects]
    headers, rows = _rows(kind, objs)
    emit(objs, args.output, table(headers, rows) + f"\n({len(objs)} {kind} at revision {r.revision})")
    return EXIT_OK


def _when(info: pb.RevisionInfo) -> str:
    return info.created_at.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")


async def cmd_history(args: argparse.Namespace, c: ConfigClient) -> int:
    r = await c.history(limit=args.limit)
    rows = [
        [
            h.revision, _when(h), h.action + (f"->{h.rolled_back_to}" if h.HasField("rolled_back_to") else ""),
            h.actor, _counts(h.counts), h.services, h.backends, h.reason,
        ]
        for h in r.revisions
    ]  # fmt: skip
    human = table(["REV", "WHEN (UTC)", "ACTION", "ACTOR", "CHANGES", "SERVICES", "BACKENDS", "REASON"], rows)
    emit([_dict(h) for h in r.revisions], args.output, human if rows else "(no revisions yet)")
    return EXIT_OK


async def cmd_rollback(args: argparse.Namespace, c: ConfigClient) -> int:
    r = await c.rollback(args.revision, reason=args.reason, expected_revision=args.expect_revision)
    emit(_apply_json(r), args.output, _apply_human(r, f"rolled back to revision {args.revision}"))
    return EXIT_OK


async def cmd_backend(args: argparse.Namespace, c: ConfigClient) -> int:
    state = {
        "drain": pb.BACKEND_STATE_DRAINING,
        "disable": pb.BACKEND_STATE_DISABLED,
        "enable": pb.BACKEND_STATE_ENABLED,
    }[args.action]
    r = await c.set_backend_state(
        args.backend, state, service=args.service, reason=args.reason, expected_revision=args.expect_revision
    )
    emit(_apply_json(r), args.output, _apply_human(r, f"backend {args.backend}: {args.action}"))
    return EXIT_OK


_NODE_ACTIONS = {"isolate": pb.NODE_STATE_ISOLATED, "drain": pb.NODE_STATE_DRAINING, "restore": pb.NODE_STATE_ACTIVE}


def _check_drain_args(args: argparse.Namespace) -> None:
    if args.action != "drain":
        given = [f for f, v in (("--timeout", args.timeout), ("--threshold", args.threshold)) if v is not None]
        given += [f for f, v in (("--no-wait", args.no_wait), ("--force", args.force)) if v]
        if given:
            raise _UsageError(f"{', '.join(given)} go(es) with drain only")
        return
    if args.threshold is not None and args.threshold < 0:
        raise _UsageError(f"--threshold {args.threshold}: must be 0 or more connections")
    if args.interval <= 0:
        raise _UsageError(f"--interval {args.interval:g}: must be more than 0 seconds")


async def cmd_node(args: argparse.Namespace, c: ConfigClient) -> int:
    _check_drain_args(args)
    r = await c.set_node_state(
        args.node,
        _NODE_ACTIONS[args.action],
        reason=args.reason,
        expected_revision=args.expect_revision,
        drain_timeout_s=args.timeout,
        drain_threshold=args.threshold,
        force=args.force,
    )
    return await _after_state_change(args, c, r, f"node {args.node}: {args.action}", lambda n: n["id"] == args.node)


async def cmd_cluster(args: argparse.Namespace, c: ConfigClient) -> int:
    _check_drain_args(args)
    r = await c.set_node_state(
        "",
        _NODE_ACTIONS[args.action],
        cluster=args.cluster,
        reason=args.reason,
        expected_revision=args.expect_revision,
        drain_timeout_s=args.timeout,
        drain_threshold=args.threshold,
        force=args.force,
    )
    return await _after_state_change(
        args, c, r, f"cluster {args.cluster}: {args.action}", lambda n: n["cluster"] == args.cluster
    )


async def _after_state_change(
    args: argparse.Namespace, c: ConfigClient, r: pb.ApplyResponse, verb: str, selects: Callable[[Any], bool]
) -> int:
    """Print the committed change; for a drain, follow it until route control reports it complete."""
    out = _apply_json(r)
    if args.action != "drain":
        emit(out, args.output, _apply_human(r, verb))
        return EXIT_OK
    nodes = [n for o in (await c.list("nodes")).objects if selects(n := json.loads(o.json))]
    draining = [n for n in nodes if n["state"] == "draining" and n.get("drain")]
    out["draining"] = [{"node": n["id"], **n["drain"]} for n in draining]
    human = _apply_human(r, verb)
    for n in draining:
        d = n["drain"]
        human += (
            f"\nnode {n['id']} draining since {d['started_at']}: deprioritised until fewer than {d['threshold']} "
            f"connections, withdrawn after {d['timeout']:g}s at the latest"
        )
    for n in nodes:
        if n["state"] != "draining":
            human += f"\nnode {n['id']} is {n['state']}: not drained"
    if args.no_wait or not draining:
        emit(out, args.output, human)
        return EXIT_OK
    if args.output == "table":
        print(human, flush=True)
    progress = []
    for n in draining:
        vips = (await c.list("vips", node=n["id"])).objects
        d = n["drain"]
        progress.append(
            drain_follow.NodeProgress(
                node=n["id"],
                started_at=datetime.fromisoformat(d["started_at"]),
                timeout_s=float(d["timeout"]),
                threshold=int(d["threshold"]),
                vips=len(vips),
            )
        )
    try:
        bus = await connect(settings_from(getattr(args, "nats", None)))
    except Exception as exc:
        _err(
            f"the drain is committed, but its progress cannot be followed: NATS unreachable ({exc}); "
            "`vgwctl status` shows it"
        )
        return EXIT_UNREACHABLE
    try:
        await drain_follow.follow(
            bus, progress, interval_s=args.interval, out=drain_follow.progress_stream(args.output)
        )
    finally:
        await bus.close()
    out["nodes"] = [p.as_dict() for p in progress]
    if args.output != "table":
        emit(out, args.output)
    bad = [p for p in progress if p.phase != "drained"]
    if bad:
        _err(f"{len(bad)} node(s) not drained: " + "; ".join(p.line(datetime.now(UTC)) for p in bad))
        return EXIT_FAIL
    return EXIT_OK


async def cmd_status(args: argparse.Namespace, c: ConfigClient) -> int:
    hist = await c.history(limit=1)
    nodes = [json.loads(o.json) for o in (await c.list("nodes")).objects]
    vips = (await c.list("vips")).objects
    data: dict[str, Any] = {"config_service": c.addr, "revision": 0}
    lines = [f"config service  {c.addr}: reachable"]
    if hist.revisions:
        h = hist.revisions[0]
        data.update(
            revision=h.revision,
            committed_at=_when(h),
            actor=h.actor,
            action=h.action,
            reason=h.reason,
            services=h.services,
            backends=h.backends,
        )
        lines.append(f"revision        {h.revision} ({h.action} by {h.actor} at {_when(h)} UTC: {h.reason or '-'})")
        lines.append(
            f"objects         {len(vips)} VIPs, {h.services} services, {h.backends} backends, {len(nodes)} nodes"
        )
    else:
        lines.append("revision        0 (nothing applied yet)")
    live = await runtime_view.read(settings_from(getattr(args, "nats", None)))
    data["nodes"] = []
    rows = []
    for n in nodes:
        drain = runtime_view.drain_phase(n, live.get("routes", []))
        data["nodes"].append({"id": n["id"], "cluster": n["cluster"], "state": n["state"], "drain": drain})
        rows.append([n["id"], n["cluster"], drain["phase"] if drain else n["state"], runtime_view.drain_text(drain)])
    if nodes:
        lines.append("")
        lines.append(table(["NODE", "CLUSTER", "STATE", "DRAIN"], rows))
    data.update(live)
    lines += runtime_view.render(live)
    emit(data, args.output, "\n".join(lines))
    return EXIT_OK
