"""Route-control decisions as level state: the ``vgw_routes`` KV bucket.

One entry per (node, VIP): what the node's route control decided for the VIP (announced,
deprioritised or withdrawn), why, with which BGP attributes, and the inputs behind it (gates,
healthy-backend counts, damping). routectl on that node is the only writer; ``vgwctl status`` and
the monitor read it, and a restarted routectl reads its own entries back (hysteresis and damping
survive a restart). Keys are ``<node>.<vip token>`` (``node-1.203-0-113-10``), so one node's
entries are ``<node>.>``.

Transitions are also published as ``vip.announce`` / ``vip.withdraw`` events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from vgw.events import BgpAttributes, DrainEndReason, IPAddress, RouteReason, RouteState
from vgw.naming import addr_token, check_name

ROUTES_BUCKET = "vgw_routes"

__all__ = ["ROUTES_BUCKET", "DrainMark", "GateStatus", "RouteEntry", "route_key", "route_key_prefix"]

GateName = Literal["forwarder", "programmed", "health", "node_active", "vip_enabled", "requests"]


def route_key(node: str, vip: str | IPAddress) -> str:
    """KV key of a (node, VIP) decision: ``node-1.203-0-113-10``."""
    return f"{check_name(node)}.{addr_token(vip)}"


def route_key_prefix(node: str) -> str:
    """KV key pattern of every decision of one node: ``node-1.>``."""
    return f"{check_name(node)}.>"


class GateStatus(BaseModel):
    """One gate's result at decision time: ``ok`` and a short human detail."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: bool
    detail: Annotated[str, Field(max_length=512)] = ""


class DrainMark(BaseModel):
    """The node's drain as route control saw it when it decided (the same on every VIP of the node):
    which drain (``started_at``), and whether and how it completed. A restarted routectl reads it back,
    so a completed drain stays completed and ``node.drain.*`` events are not repeated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    started_at: datetime
    deadline: datetime
    threshold: Annotated[int, Field(ge=0)]
    completed: DrainEndReason | None = Field(default=None, description="idle or timeout once the drain is over")
    completed_at: datetime | None = None


class RouteEntry(BaseModel):
    """The current decision of one node's route control for one VIP."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")]
    vip: IPAddress
    role: Literal["primary", "standby"] = "primary"
    state: RouteState
    reason: RouteReason
    detail: Annotated[str, Field(max_length=1024)] = ""
    attributes: BgpAttributes = BgpAttributes()
    gates: dict[GateName, GateStatus] = {}
    healthy_backends: Annotated[int, Field(ge=0)] = 0
    total_backends: Annotated[int, Field(ge=0)] = 0
    below_low_watermark: bool = Field(
        default=False, description="Hysteresis state: true from below low until every service reaches high"
    )
    config_revision: Annotated[int, Field(ge=0)] | None = None
    cause_event_id: Annotated[str, Field(max_length=256)] | None = None
    since: datetime = Field(description="When the node entered this state for the VIP")
    decided_at: datetime = Field(description="When this entry was last written")
    flap_penalty: Annotated[float, Field(ge=0)] = Field(
        default=0.0, description="Damping penalty (health-driven withdrawals, decaying) at decision time"
    )
    damped_until: datetime | None = Field(
        default=None, description="While damped: the earliest time the VIP may be announced again"
    )
    speaker: Annotated[str, Field(max_length=128)] = Field(default="", description="routectl instance")
    drain: DrainMark | None = Field(default=None, description="While the node is draining (state draining)")

    @property
    def key(self) -> str:
        return route_key(self.node, self.vip)

    @property
    def announced(self) -> bool:
        return self.state != RouteState.WITHDRAWN
