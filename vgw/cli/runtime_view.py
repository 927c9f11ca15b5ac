"""What ``vgwctl status`` shows beyond the configuration: the live state the services keep in NATS —
route control's decision per (node, VIP) and the monitor's view per VIP and per node."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from vgw.bus import Bus
from vgw.monitoring import MONITOR_BUCKET, VipView
from vgw.routes import ROUTES_BUCKET, RouteEntry
from vgw.settings import VgwSettings
from vgw.store import KvStore

from .output import table


async def snapshot(bus: Bus, bucket: str, model: type[Any], pattern: str) -> dict[str, Any]:
    """One bucket's current entries; the bucket is not created when it does not exist yet."""
    store: KvStore[Any] = await KvStore.open(bus, bucket, model, create=False)
    return await store.snapshot(pattern)


async def read(settings: VgwSettings, timeout_s: float = 5.0) -> dict[str, Any]:
    """Route decisions and monitor views; an ``error`` entry when NATS or a bucket is missing."""
    bus = Bus(settings.nats_options(), source=f"/vgw/vgwctl/{settings.instance_id}", identity=settings.nats_identity)
    out: dict[str, Any] = {"routes": [], "monitor": []}
    try:
        await asyncio.wait_for(bus.connect(), timeout_s)
    except Exception as exc:
        out["error"] = f"NATS at {settings.nats_url} unreachable: {exc or type(exc).__name__}"
        return out
    try:
        for key, bucket, model, pattern in (
            ("routes", ROUTES_BUCKET, RouteEntry, ">"),
            ("monitor", MONITOR_BUCKET, VipView, "view.>"),
        ):
            try:
                entries = await asyncio.wait_for(snapshot(bus, bucket, model, pattern), timeout_s)
            except Exception:  # bucket not created yet: that service has not run
                entries = {}
            out[key] = [e.model_dump(mode="json") for _k, e in sorted(entries.items())]
    finally:
        await bus.close()
    return out


def drain_phase(node: dict[str, Any], routes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A node's drain for ``vgwctl status``: None unless its config state is draining; then
    ``draining`` or ``drained`` (every VIP's route entry carries this drain's completion -- route
    control decides it, config only says the node drains), with the drain's parameters."""
    d = node.get("drain")
    if node.get("state") != "draining" or not d:
        return None
    started = datetime.fromisoformat(d["started_at"])
    mine = []
    for r in routes:
        mark = r.get("drain")
        if r.get("node") == node["id"] and mark and datetime.fromisoformat(mark["started_at"]) == started:
            mine.append(mark)
    entries = [r for r in routes if r.get("node") == node["id"]]
    done = bool(mine) and len(mine) == len(entries) and all(m.get("completed") for m in mine)
    deadline = started + timedelta(seconds=float(d["timeout"]))
    return {
        "phase": "drained" if done else "draining",
        "reason": mine[0]["completed"] if done else None,
        "completed_at": mine[0].get("completed_at") if done else None,
        "started_at": d["started_at"],
        "deadline": deadline.isoformat(),
        "threshold": d["threshold"],
        "reported": bool(mine),
    }


def drain_text(drain: dict[str, Any] | None) -> str:
    if drain is None:
        return ""
    if drain["phase"] == "drained":
        return f"{drain['reason']} at {str(drain['completed_at'])[:19]}"
    left = (datetime.fromisoformat(drain["deadline"]) - datetime.now(UTC)).total_seconds()
    text = f"since {drain['started_at'][:19]}, below {drain['threshold']} conns or {max(0, left):.0f}s left"
    if not drain["reported"]:
        text += " (not reported by route control yet)"
    return text


def render(view: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if "error" in view:
        return ["", f"live state: {view['error']}"]
    routes = view["routes"]
    lines += ["", "announcements (route control, per node and VIP):"]
    if routes:
        rows = [[r["node"], r["vip"], r["state"], r["reason"], r.get("detail", "")[:70]] for r in routes]
        lines.append(table(["NODE", "VIP", "STATE", "REASON", "DETAIL"], rows))
    else:
        lines.append("  (no decisions yet)")
    lines += ["", "monitor (end to end, per VIP and per node):"]
    if view["monitor"]:
        rows = []
        for v in view["monitor"]:
            nodes = ", ".join(f"{n}={s}" for n, s in sorted(v["nodes"].items())) or "-"
            rows.append([f"{v['vip']}:{v['port']}", v["status"], v["routed"], nodes, ", ".join(v["vantages"]),
                         v.get("detail", "")[:60]])  # fmt: skip
        lines.append(table(["VIP", "STATUS", "ROUTED", "NODES", "VANTAGE POINTS", "DETAIL"], rows))
        for v in view["monitor"]:
            for req in v.get("requests", []):
                lines.append(f"  request in force for {v['vip']}: {req[:150]}")
    else:
        lines.append("  (no monitor view yet)")
    return lines
