"""Settings from ``VGW_*`` environment variables (pydantic-settings).

Every service subclasses :class:`VgwSettings`. A bad setting stops the process with a message that
names the variable and the reason, and exit status 2 (:func:`load_settings`).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import sys
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, FilePath, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vgw.naming import check_name
from vgw.telemetry.endpoint import parse_addr

EXIT_BAD_SETTINGS = 2
_NATS_SCHEMES = ("nats://", "tls://", "ws://", "wss://")


class VgwSettings(BaseSettings):
    """Settings shared by every VGW process."""

    model_config = SettingsConfigDict(env_prefix="VGW_", extra="ignore", validate_default=True)

    nats_url: str = Field(
        default="nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated for a cluster"
    )
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_creds: FilePath | None = Field(default=None, description="NATS .creds file (JWT + nkey)")
    nats_nkey_seed: FilePath | None = Field(default=None, description="NATS nkey seed file")
    nats_tls_ca: FilePath | None = None
    nats_tls_cert: FilePath | None = None
    nats_tls_key: FilePath | None = None
    nats_inbox_prefix: str = Field(
        default="_INBOX",
        pattern=r"^_INBOX(_[A-Za-z0-9][A-Za-z0-9_-]{0,62})?$",
        description="Prefix of this process's reply subjects; with permissions, _INBOX_<identity> so no other "
        "identity can read its replies (vgwctl security init sets it)",
    )
    nats_insecure: bool = Field(
        default=False,
        description="Allow a non-loopback NATS URL without credentials (local experiments only; logged loudly)",
    )
    nats_connect_timeout_s: float = Field(default=2.0, gt=0, le=60)
    nats_reconnect_wait_s: float = Field(default=0.5, gt=0, le=60)

    config_recheck: bool = Field(
        default=True,
        description="Re-validate every config revision read from the store as the config service would, and "
        "skip one that fails. Off only for test rigs that commit documents the API refuses (loopback backends)",
    )

    instance_id: str = Field(default_factory=socket.gethostname, description="This process's id in events")
    metrics_addr: str = Field(default="127.0.0.1:9100", description="host:port of /metrics, /healthz, /readyz")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout_s: float = Field(default=10.0, gt=0, le=300)

    js_replicas: int | None = Field(
        default=None,
        ge=1,
        le=5,
        description="JetStream replicas of every KV bucket and of the event stream when they are created; unset: 3 "
        "when the NATS server belongs to a cluster, 1 when it is a single server (docs/settings.md)",
    )

    event_stream_max_age_s: float = Field(default=7 * 86400, gt=0, description="Event replay window")
    event_stream_max_bytes: int = Field(default=1 << 30, ge=1 << 20, description="Event stream size bound")

    @field_validator("nats_url")
    @classmethod
    def _check_nats_url(cls, v: str) -> str:
        urls = [u.strip() for u in v.split(",") if u.strip()]
        if not urls:
            raise ValueError("no NATS URL given")
        for u in urls:
            if not u.startswith(_NATS_SCHEMES):
                raise ValueError(f"{u!r} must start with one of {', '.join(_NATS_SCHEMES)}")
        return ",".join(urls)

    @field_validator("metrics_addr")
    @classmethod
    def _check_addr(cls, v: str) -> str:
        parse_addr(v)
        return v

    @field_validator("instance_id")
    @classmethod
    def _check_instance(cls, v: str) -> str:
        # The hostname may have dots; ids go into subjects and KV keys, so keep them token-safe.
        return check_name(v.replace(".", "-")[:63])

    @model_validator(mode="after")
    def _check_tls_pair(self) -> VgwSettings:
        if (self.nats_tls_cert is None) != (self.nats_tls_key is None):
            raise ValueError("VGW_NATS_TLS_CERT and VGW_NATS_TLS_KEY must be given together")
        if self.nats_password is not None and self.nats_user is None:
            raise ValueError("VGW_NATS_PASSWORD needs VGW_NATS_USER")
        if not self.nats_has_credentials and not self.nats_insecure:
            remote = [u for u in self.nats_servers if not _is_loopback_url(u)]
            if remote:
                raise ValueError(
                    f"VGW_NATS_URL {remote[0]} is not a loopback address and no NATS credentials are set "
                    "(VGW_NATS_NKEY_SEED, VGW_NATS_CREDS, VGW_NATS_USER or VGW_NATS_TOKEN; see docs/security.md); "
                    "set VGW_NATS_INSECURE=true only for a local experiment"
                )
        return self

    @property
    def nats_has_credentials(self) -> bool:
        return (
            any(v is not None for v in (self.nats_user, self.nats_token, self.nats_creds, self.nats_nkey_seed))
            or self.nats_tls_cert is not None
        )

    @property
    def nats_identity(self) -> str:
        """The identity named by the inbox prefix (``_INBOX_<identity>``), for logs and metric labels."""
        return self.nats_inbox_prefix.removeprefix("_INBOX").removeprefix("_") or "anonymous"

    @property
    def nats_servers(self) -> list[str]:
        return self.nats_url.split(",")

    def nats_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (authentication and TLS)."""
        opts: dict[str, Any] = {
            "servers": self.nats_servers,
            "connect_timeout": self.nats_connect_timeout_s,
            "reconnect_time_wait": self.nats_reconnect_wait_s,
            "inbox_prefix": self.nats_inbox_prefix,
        }
        if self.nats_user is not None:
            opts["user"] = self.nats_user
            opts["password"] = self.nats_password.get_secret_value() if self.nats_password else ""
        if self.nats_token is not None:
            opts["token"] = self.nats_token.get_secret_value()
        if self.nats_creds is not None:
            opts["user_credentials"] = str(self.nats_creds)
        if self.nats_nkey_seed is not None:
            opts["nkeys_seed"] = str(self.nats_nkey_seed)
        tls_wanted = self.nats_tls_ca or self.nats_tls_cert or any(u.startswith("tls://") for u in self.nats_servers)
        if tls_wanted:
            ctx = ssl.create_default_context(cafile=str(self.nats_tls_ca) if self.nats_tls_ca else None)
            if self.nats_tls_cert is not None and self.nats_tls_key is not None:
                ctx.load_cert_chain(str(self.nats_tls_cert), str(self.nats_tls_key))
            opts["tls"] = ctx
        return opts


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address; ``0.0.0.0``, ``::`` and other names are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_loopback_url(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


S = TypeVar("S", bound=VgwSettings)


def describe_errors(cls: type[BaseSettings], exc: ValidationError) -> list[str]:
    """One line per bad setting, naming its variable; secrets are never echoed."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        field = loc[0] if loc else ""
        var = f"{prefix}{field}".upper() if field else "(settings)"
        shown = ""
        if field and "secret" not in field and "password" not in field and "token" not in field:
            shown = f" (got {err.get('input')!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        lines.append(f"bad setting {var}: {err['msg']}{shown}")
    return lines


def load_settings(cls: type[S]) -> S:
    """Build settings from the environment, or exit 2 with one line per bad setting."""
    try:
        return cls()
    except ValidationError as exc:
        for line in describe_errors(cls, exc):
            print(f"vgw: {line}", file=sys.stderr)
        sys.exit(EXIT_BAD_SETTINGS)
