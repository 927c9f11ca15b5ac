"""``VGW_*`` settings of routectl (docs/routectl.md lists them)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from vgw.naming import check_name
from vgw.settings import VgwSettings


class RoutectlSettings(VgwSettings):
    node_id: str = Field(description="The node whose VIPs this routectl announces (required)")

    # gates
    dataplane_stale_s: float = Field(
        default=3.0, gt=0, le=300, description="dataplane.status older than this counts as a dead forwarder"
    )
    tick_s: float = Field(default=0.2, gt=0, le=5, description="Re-evaluation period (timers, staleness)")
    coalesce_quiet_s: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="After a change, decide once the inputs were quiet this long (a burst of health changes "
        "gives one evaluation)",
    )
    coalesce_max_s: float = Field(
        default=0.05, ge=0, le=2, description="...but never later than this after the first change of a burst"
    )
    forwarder_restart_grace_s: float = Field(
        default=0.0,
        ge=0,
        le=60,
        description="A forwarder that keeps its connection tables across a restart (dataplane.status "
        "conn_state_kept) and reports down stays announced this long: a restart or an upgrade takes it "
        "out for under a second, and a withdrawal would move its flows; 0 (default) = withdraw at once",
    )

    # local truth
    fwd_socket: str | None = Field(
        default=None,
        description="The node's forwarder control socket (the shim's VGW_FWD_SOCKET). Set, route control also "
        "asks the forwarder directly: a forwarder that stops answering is withdrawn even while NATS is down, "
        "and one that still runs the state its shim last reported stays announced while the shim restarts",
    )
    fwd_probe_interval_s: float = Field(default=0.2, gt=0, le=10, description="HELLO to the forwarder every ...")
    fwd_probe_timeout_s: float = Field(
        default=1.0, gt=0, le=30, description="A HELLO not answered in this is a failure"
    )
    fwd_gone_after_s: float = Field(
        default=0.5, ge=0, le=60, description="The forwarder counts as dead after failing probes for this long"
    )

    health_bucket: str = Field(
        default="vgw_health",
        description="KV bucket of backend health; another name gives this node its own health view "
        "(e.g. a healthcheck instance per node)",
    )

    # damping and guard rails
    hold_down_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="After a health-driven withdraw, the VIP must stay healthy this long before it is announced "
        "again; doubles with each further flap (0 = damping off)",
    )
    hold_down_max_s: float = Field(default=300.0, ge=0, le=86400, description="Upper bound of the hold-down")
    flap_half_life_s: float = Field(default=60.0, gt=0, le=86400, description="Half-life of the flap penalty")
    health_withdrawals_per_min: int = Field(
        default=20,
        ge=0,
        le=100000,
        description="At most this many health-driven withdrawals per minute on this node (0 = no limit); "
        "forwarder death and operator actions are never limited",
    )

    guard_last_announcer: bool = Field(
        default=True,
        description="Do not honour a withdraw request that is not from an operator (requester operator/...) when "
        "no other node (for a cluster request: no node of another cluster) announces the VIP",
    )

    # restart
    graceful_restart_s: int = Field(
        default=0,
        ge=0,
        le=4095,
        description="0: withdraw everything on SIGTERM. >0: advertise BGP graceful restart with this restart "
        "time and keep the routes on SIGTERM (the speaker is killed without a NOTIFICATION, peers keep the "
        "routes as stale until routectl is back or the time runs out)",
    )
    startup_wait_s: float = Field(
        default=2.0, gt=0, le=60, description="Longest wait for the withdraw requests in force (vgw_requests) at start"
    )

    # the speaker
    exabgp: str = Field(default="", description="ExaBGP executable; default the one next to this Python")
    exabgp_netns: str | None = Field(
        default=None, description="Run ExaBGP in this network namespace (/run/netns/<name>); default routectl's own"
    )
    run_dir: Path | None = Field(
        default=None, description="Directory for ExaBGP's config and the API socket; default a private temp dir"
    )
    command_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="An ExaBGP command not acknowledged in this time restarts ExaBGP"
    )
    exabgp_log_level: str = Field(default="INFO", description="ExaBGP's own log level (its lines go to our log)")

    @field_validator("node_id")
    @classmethod
    def _check_node(cls, v: str) -> str:
        return check_name(v)
