"""``vgwctl get health [--service S]``: every backend's health per service as the health checkers
see it -- state, since when, the last probe's result and detail -- from the ``vgw_health`` bucket
(:mod:`vgw.health`), laid out by the services of the current config revision.

Health is kept per probe stream (backend address, port, check), not per service: the config says
which services use which stream, so this view reads the document from the config service (as
``get config`` does) and the health from NATS. A backend whose stream has no entry yet is shown
with its check's ``initial_state`` (what the forwarder assumes until the first verdict), marked
not checked; a service without a health check has its backends always healthy.

``get`` belongs to the config commands (:mod:`.config_cmds`); :func:`add_parser` teaches it the
``health`` kind and the options of a live view, and leaves every other kind to it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from vgw.bus import Bus
from vgw.config import ConfigDocument
from vgw.config.client import ConfigClient
from vgw.config.v1 import config_pb2 as pb
from vgw.health import HEALTH_BUCKET, HealthEntry, health_key
from vgw.store import KvStore

from . import config_cmds, live
from .output import table

KIND = "health"
EXIT_NOT_FOUND = 6


class ServiceNotFoundError(LookupError):
    pass


def add_parser(sub: Any) -> None:
    get: argparse.ArgumentParser | None = sub.choices.get("get")
    if get is None:
        raise RuntimeError("health_view.add_parser must run after the config commands registered `get`")
    g = get.add_argument_group("get health")
    if "--service" not in get._option_string_actions:
        g.add_argument("--service", help="health: only this service's backends")
    if "--watch" not in get._option_string_actions:
        live.add_watch(g)  # type: ignore[arg-type]  # an argument group takes the same add_argument
    original: Callable[[argparse.Namespace], int] = get.get_default("func")

    def dispatch(args: argparse.Namespace) -> int:
        if args.kind == KIND:
            return config_cmds._run(cmd_health)(args)
        if getattr(args, "service", None) or getattr(args, "watch", None):
            return live.fail(f"--service and --watch are options of `get {KIND}`", live.EXIT_USAGE)
        return original(args)

    get.set_defaults(func=dispatch)


async def cmd_health(args: argparse.Namespace, client: ConfigClient) -> int:
    if args.name:
        return live.fail(f"`get {KIND}` takes no NAME (use --service)", live.EXIT_USAGE)

    async def view(bus: Bus) -> live.Frame:
        return await frame(bus, client, args.service)

    try:
        return await live.run_view(args, view)
    except ServiceNotFoundError as exc:
        return live.fail(str(exc), EXIT_NOT_FOUND)


async def read_health(bus: Bus) -> dict[str, HealthEntry]:
    """Every probe stream's entry; empty when no health checker has created the bucket yet."""
    try:
        store = await KvStore.open(bus, HEALTH_BUCKET, HealthEntry, create=False)
    except Exception:
        return {}
    return await store.snapshot()


def backend_rows(doc: ConfigDocument, health: dict[str, HealthEntry], service: str | None) -> list[dict[str, Any]]:
    checks = {c.name: c for c in doc.health_checks}
    out = []
    for vip, svc in doc.services():
        if service is not None and svc.name != service:
            continue
        check = checks.get(svc.health_check) if svc.health_check else None
        backends = []
        for b in svc.backends:
            row: dict[str, Any] = {"backend": b.key, "weight": b.weight, "config_state": b.state}
            if check is None:
                row |= {"health": "up", "checked": False, "reason": "no health check: always healthy"}
            else:
                port = check.port or b.port
                e = health.get(health_key(b.address, port, check.name))
                if e is None:
                    row |= {"health": check.initial_state, "checked": False, "reason": "not checked yet"}
                else:
                    row |= {
                        "health": e.state.value,
                        "checked": True,
                        "since": e.since.isoformat(),
                        "reason": e.reason.value,
                        "detail": e.detail,
                        "latency_ms": e.last_latency_ms,
                        "consecutive": e.consecutive,
                        "checker": e.checker,
                    }
                row["probe_port"] = port
            backends.append(row)
        out.append(
            {
                "service": svc.name,
                "vip": str(vip.address),
                "port": svc.port,
                "protocol": svc.protocol,
                "check": check.name if check else None,
                "check_kind": check.kind if check else None,
                "healthy": sum(1 for r in backends if r["health"] == "up" and r["config_state"] != "disabled"),
                "backends": backends,
            }
        )
    if service is not None and not out:
        raise ServiceNotFoundError(f"no service {service!r} in the current config")
    return out


def as_text(data: dict[str, Any], now: datetime) -> str:
    if not data["services"]:
        return f"no services at config revision {data['revision']}"
    rows = []
    for s in data["services"]:
        for b in s["backends"]:
            since = b.get("since")
            when = f"{since[:19]} ({live.ago(datetime.fromisoformat(since), now)})" if since else ""
            reason = b["reason"] + (f": {b['detail']}" if b.get("detail") else "")
            state = b["health"] if b["checked"] else f"{b['health']} (unchecked)"
            rows.append([s["service"], b["backend"], b["config_state"], state, when, s["check"], reason[:70]])
    text = table(["SERVICE", "BACKEND", "CONFIG", "HEALTH", "SINCE", "CHECK", "LAST PROBE"], rows)
    summary = ", ".join(f"{s['service']} {s['healthy']}/{len(s['backends'])} healthy" for s in data["services"])
    return f"config revision {data['revision']}: {summary}\n\n{text}"


async def frame(bus: Bus, client: ConfigClient, service: str | None) -> live.Frame:
    got = await client.get(0, pb.DOCUMENT_FORMAT_JSON)
    # the config service validated it when it was applied: parse, do not judge it again here
    doc = ConfigDocument.model_validate_json(got.document) if got.revision else ConfigDocument()
    health = await read_health(bus)
    now = datetime.now(UTC)
    data = {"at": now.isoformat(), "revision": got.revision, "services": backend_rows(doc, health, service)}
    return live.Frame(data, as_text(data, now))
