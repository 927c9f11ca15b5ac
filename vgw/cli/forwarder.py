"""``vgwctl forwarder``: this node's forwarder as its control socket reports it (``STATS``,
docs/forwarder.md) -- connections and half-open entries, flood protection per service (the SYN
proxy, cookies, evictions, rate-limit drops, segments without a connection and RSTs, LIP port
exhaustion) and port exhaustion per LIP, with rates from two reads ``--interval`` apart.

It runs on the node (the socket is local and root-only, like ``vgw-shim``'s access to it); the
cluster-wide view of the same counters is in Prometheus (docs/shim.md, the VGW / Flood protection
dashboard).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from .output import FORMATS, emit, table

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_SOCKET = "/run/vgw-fwd.sock"

# Per-service counters of STATS that are totals (syn_proxy_active is a gauge: workers engaged).
SERVICE_COUNTERS = (
    "syn_cookie_sent",
    "syn_cookie_ok",
    "syn_cookie_bad",
    "conn_evicted",
    "drop_limit_cps",
    "drop_limit_src24",
    "drop_no_conn",
    "rst_sent",
    "lport_exhausted",
)
# Node-wide counters (STATS "counters") shown in the summary.
NODE_COUNTERS = (
    "conn_new",
    "syn_cookie_sent",
    "syn_cookie_ok",
    "syn_cookie_bad",
    "conn_evicted",
    "rst_sent",
    "rst_ratelimited",
    "lport_exhausted",
    "drop_limit_cps",
    "drop_limit_src24",
    "drop_tcp_no_conn",
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "forwarder",
        help="this node's forwarder: flood protection per service, LIP port exhaustion (root, on the node)",
        description="Read this node's vgw-fwd over its control socket: connections, half-open entries, the "
        "SYN proxy and its cookies, evictions, rate-limit drops and RSTs per service, and LIP port "
        "exhaustion, as totals since the forwarder started and per second over --interval.",
    )
    p.add_argument(
        "--socket",
        default=os.environ.get("VGW_FWD_SOCKET", DEFAULT_SOCKET),
        help=f"vgw-fwd's control socket ($VGW_FWD_SOCKET, {DEFAULT_SOCKET})",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="time between the two reads the rates come from (0: totals only; default 1)",
    )
    p.add_argument("--all", action="store_true", help="every service, also those without protection activity")
    p.add_argument("-o", "--output", choices=FORMATS, default="table")
    p.set_defaults(func=run)


def _rate(a: dict[str, Any] | None, b: dict[str, Any], key: str, dt: float) -> float | None:
    if a is None or dt <= 0:
        return None
    x, y = a.get(key), b.get(key)
    if not isinstance(x, int) or not isinstance(y, int) or y < x:
        return None
    return (y - x) / dt


def view(
    first: dict[str, Any] | None, second: dict[str, Any], interval_s: float, *, all_services: bool = False
) -> dict[str, Any]:
    """What the command shows, from one STATS reply (totals) or two (``first`` earlier by
    ``interval_s``: rates too). Pure, for tests."""
    if first is not None and (first.get("pid"), first.get("start_unix_ns")) != (
        second.get("pid"),
        second.get("start_unix_ns"),
    ):
        first = None  # the forwarder restarted in between: no rates
    dt = interval_s if first is not None else 0.0
    c1 = first.get("counters", {}) if first is not None else None
    c2 = second.get("counters", {})
    node: dict[str, Any] = {}
    for k in NODE_COUNTERS:
        if k in c2:
            node[k] = c2[k]
            node[f"{k}_per_s"] = _rate(c1, c2, k, dt)
    services = []
    s1 = first.get("services", {}) if first is not None else {}
    for name, s in sorted(second.get("services", {}).items()):
        if "syn_cookie_sent" not in s:
            continue  # a forwarder without flood protection
        row: dict[str, Any] = {
            "service": name,
            "vip": s.get("vip"),
            "port": s.get("port"),
            "proto": s.get("proto"),
            "syn_proxy_workers": s.get("syn_proxy_active", 0),
        }
        for k in SERVICE_COUNTERS:
            row[k] = s.get(k, 0)
            row[f"{k}_per_s"] = _rate(s1.get(name) if first is not None else None, s, k, dt)
        active = row["syn_proxy_workers"] > 0 or any(row[k] for k in SERVICE_COUNTERS)
        if all_services or active:
            services.append(row)
    lips = []
    l1 = first.get("lips", {}) if first is not None else {}
    for lip, e in sorted(second.get("lips", {}).items()):
        lips.append(
            {
                "lip": lip,
                "lport_exhausted": e.get("lport_exhausted", 0),
                "lport_exhausted_per_s": _rate(
                    l1.get(lip, {"lport_exhausted": 0}) if first is not None else None, e, "lport_exhausted", dt
                ),
            }
        )
    return {
        "pid": second.get("pid"),
        "uptime_s": round(second.get("uptime_ms", 0) / 1000, 1),
        "generation": second.get("generation"),
        "workers": second.get("workers"),
        "mode": second.get("mode"),
        "syn_cookie_key": second.get("syn_cookie_key"),
        "connections": c2.get("conn_active"),
        "half_open": c2.get("conn_halfopen"),
        "interval_s": dt,
        "node": node,
        "services": services,
        "services_total": len(second.get("services", {})),
        "lips": lips,
    }


def _n(v: float | None) -> str:
    if v is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def _tr(row: dict[str, Any], key: str) -> str:
    """Total, and the rate when there is one and it is not zero."""
    rate = row.get(f"{key}_per_s")
    return _n(row.get(key, 0)) + (f" ({_n(rate)}/s)" if rate else "")


def _duration(s: float) -> str:
    s = int(s)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d{h:02d}h" if d else f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def render(v: dict[str, Any]) -> str:
    key = {"file": "from a file (shared)", "random": "random (this process only)"}.get(v["syn_cookie_key"] or "", "-")
    lines = [
        f"forwarder    pid {v['pid']}, up {_duration(v['uptime_s'])}, generation {v['generation']}, "
        f"{v['workers']} workers, {v['mode']}; SYN cookie key {key}",
        f"connections  {_n(v['connections'])}, half-open {_n(v['half_open'])}",
    ]
    n = v["node"]
    if n:
        lines.append(
            "node         "
            + ", ".join(
                f"{label} {_tr(n, k)}"
                for label, k in (
                    ("new connections", "conn_new"),
                    ("SYN cookies sent", "syn_cookie_sent"),
                    ("validated", "syn_cookie_ok"),
                    ("failed", "syn_cookie_bad"),
                    ("evicted", "conn_evicted"),
                    ("RSTs sent", "rst_sent"),
                    ("RSTs rate-limited", "rst_ratelimited"),
                    ("no LIP port", "lport_exhausted"),
                )
                if k in n
            )
        )
    when = f"; /s over {v['interval_s']:g} s" if v["interval_s"] else ""
    lines += ["", f"flood protection per service (totals since the forwarder started{when}):"]
    if v["services"]:
        rows = [
            [
                s["service"],
                f"{s['vip']}:{s['port']}/{s['proto']}",
                f"on, {s['syn_proxy_workers']}/{v['workers']} workers" if s["syn_proxy_workers"] else "off",
                _tr(s, "syn_cookie_sent"),
                _tr(s, "syn_cookie_ok"),
                _tr(s, "syn_cookie_bad"),
                _tr(s, "conn_evicted"),
                f"{_tr(s, 'drop_limit_cps')} / {_tr(s, 'drop_limit_src24')}",
                _tr(s, "drop_no_conn"),
                _tr(s, "rst_sent"),
                _tr(s, "lport_exhausted"),
            ]
            for s in v["services"]
        ]
        headers = ["SERVICE", "VIP", "SYN PROXY", "COOKIES SENT", "VALIDATED", "FAILED", "EVICTED",
                   "LIMIT DROPS CPS / SRC24", "NO-CONN DROPS", "RSTS", "NO LIP PORT"]  # fmt: skip
        lines.append(table(headers, rows))
    hidden = v["services_total"] - len(v["services"])
    if hidden:
        lines.append(f"  ({hidden} services without protection activity not shown: --all)")
    elif not v["services"]:
        lines.append("  (no services)")
    lines += ["", "LIP port exhaustion (new connections that found no free port):"]
    if v["lips"]:
        lines.append(table(["LIP", "NO FREE PORT"], [[e["lip"], _tr(e, "lport_exhausted")] for e in v["lips"]]))
    else:
        lines.append("  (none)")
    return "\n".join(lines)


async def _read(socket: str, interval_s: float) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    from vgw.fwdctl import FwdClient  # the control socket's client; only this command needs it

    client = FwdClient(socket, timeout_s=10)
    try:
        first = None
        if interval_s > 0:
            first = await client.stats()
            await asyncio.sleep(interval_s)
        return first, await client.stats()
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    from vgw.fwdctl import FwdError, FwdUnavailableError

    if args.interval < 0 or args.interval > 60:
        print("vgwctl: --interval must be between 0 and 60 seconds", file=sys.stderr)
        return EXIT_USAGE
    try:
        first, second = asyncio.run(_read(args.socket, args.interval))
    except FwdUnavailableError as exc:
        print(f"vgwctl: forwarder control socket unreachable: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except FwdError as exc:
        print(f"vgwctl: the forwarder refused STATS: {exc}", file=sys.stderr)
        return EXIT_FAIL
    v = view(first, second, args.interval, all_services=args.all)
    v["socket"] = args.socket
    emit(v, args.output, render(v))
    return EXIT_OK
