"""The monitor's shared state, in two KV buckets.

* ``vgw_monitor_obs``: ``obs.<vip>_<port>.<path>.<vantage>`` -- :class:`PathObservation`: what one
  vantage point sees through one path (``routed`` = the normal routed path, or a node id = steered
  through that node). Written by each monitor instance after each probe; the bucket's TTL forgets
  dead vantage points.

``vgw_monitor`` (no TTL) holds:
* ``view.<vip>_<port>`` -- :class:`VipView`: the judged status of a VIP probe, per node, with the
  evidence and the requests in force. Written by the leading monitor instance; ``vgwctl status``
  reads it.

The withdraw requests the monitor has in force are in ``vgw_requests`` (:mod:`vgw.withdraw_requests`,
with expiry); :class:`ActiveRequest` is the judge's own record of one. ``req.*`` entries that older
releases wrote here are no longer read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from vgw.events import IPAddress, ProbeEvidence, ProbeResult, VipHealth
from vgw.naming import addr_token, endpoint_token

MONITOR_BUCKET = "vgw_monitor"
OBS_BUCKET = "vgw_monitor_obs"
ROUTED = "routed"

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathObservation(_Model):
    vantage: Name
    vip: IPAddress
    port: Annotated[int, Field(ge=0, le=65535)]
    protocol: Literal["tcp", "udp"]
    probe: Name
    path: Name
    interval_s: Annotated[float, Field(gt=0)]
    window: Annotated[int, Field(ge=0)]
    successes: Annotated[int, Field(ge=0)]
    consecutive_failures: Annotated[int, Field(ge=0)]
    consecutive_successes: Annotated[int, Field(ge=0)]
    failing_since: datetime | None = Field(
        default=None, description="When the current run of failures began (none while the last probe succeeded)"
    )
    last_ok_at: datetime | None = Field(default=None, description="When a probe last succeeded")
    succeeding_since: datetime | None = Field(
        default=None, description="When the current run of successes began (none while the last probe failed)"
    )
    errors: dict[str, int] = {}
    last_result: ProbeResult
    last_detail: Annotated[str, Field(max_length=256)] = ""
    p50_ms: float | None = None
    p99_ms: float | None = None
    updated_at: datetime

    def evidence(self) -> ProbeEvidence:
        return ProbeEvidence(
            vantage=self.vantage,
            node=None if self.path == ROUTED else self.path,
            probes=self.window,
            successes=self.successes,
            errors=dict(self.errors),
            p50_ms=self.p50_ms,
            p99_ms=self.p99_ms,
        )


NodeVerdict = Literal["ok", "failing", "unknown", "withdrawn"]


class VipView(_Model):
    vip: IPAddress
    port: Annotated[int, Field(ge=0, le=65535)]
    protocol: Literal["tcp", "udp"]
    probe: Name
    status: VipHealth
    detail: Annotated[str, Field(max_length=1024)] = ""
    routed: NodeVerdict = "unknown"
    nodes: dict[str, NodeVerdict] = {}
    vantages: list[str] = []
    evidence: list[ProbeEvidence] = []
    requests: list[str] = []
    leader: Name
    updated_at: datetime


class ActiveRequest(_Model):
    kind: Literal["node", "cluster"]
    target: Name
    vip: IPAddress
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    standby_cluster: Name | None = None
    reason: Annotated[str, Field(max_length=1024)]
    issued_at: datetime
    expires_at: datetime
    refreshed_at: datetime


def obs_key(vip: IPAddress | str, port: int, path: str, vantage: str) -> str:
    return f"obs.{endpoint_token(vip, port)}.{path}.{vantage}"


def view_key(vip: IPAddress | str, port: int) -> str:
    return f"view.{endpoint_token(vip, port)}"


def request_key(kind: str, target: str, vip: IPAddress | str) -> str:
    return f"req.{kind}.{target}.{addr_token(vip)}"
