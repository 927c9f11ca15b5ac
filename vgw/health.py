"""Backend health as level state: the ``vgw_health`` KV bucket.

One entry per probe stream — a check against one backend address and port — keyed by
:func:`vgw.config.health_key` (``198-51-100-5_8080.web-http``). The healthcheck service is its only
writer (it writes on transitions, so an entry is current as long as it exists); the forwarder shim
and routectl read it. A missing entry means "not checked yet": readers use the check's
``initial_state`` from config. Transitions are also published as ``backend.up``/``backend.down``
events; the bucket is what a restarted reader rebuilds from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from vgw.config import health_key
from vgw.events import BackendState, CheckKind, IPAddress, ProbeResult

HEALTH_BUCKET = "vgw_health"

__all__ = ["HEALTH_BUCKET", "HealthEntry", "health_key"]


class HealthEntry(BaseModel):
    """The health of one (backend address, port, check)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: IPAddress
    port: Annotated[int, Field(ge=0, le=65535)]
    check: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")]
    kind: CheckKind
    state: BackendState
    reason: ProbeResult
    detail: Annotated[str, Field(max_length=1024)] = ""
    last_latency_ms: Annotated[float, Field(ge=0)] | None = None
    consecutive: Annotated[int, Field(ge=0)] = 0
    since: datetime = Field(description="When the state was entered")
    checker: Annotated[str, Field(max_length=128)] = Field(description="Instance that decided the state")
    traceparent: Annotated[str, Field(max_length=128)] | None = Field(
        default=None,
        description="W3C trace context of the transition, so a reader acting on this entry joins its trace",
    )

    @property
    def key(self) -> str:
        return health_key(self.address, self.port, self.check)
