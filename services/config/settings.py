"""Settings of the config service (``VGW_*`` environment variables; docs/config.md)."""

from __future__ import annotations

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from vgw.config.model import Limits
from vgw.config.store import BUCKET, DEFAULT_RETENTION
from vgw.settings import VgwSettings, is_loopback_host
from vgw.telemetry.endpoint import parse_addr

from .auth import load_tokens

DEFAULT_MAX_REQUEST_BYTES = Limits.DOCUMENT_BYTES + (1 << 20)
"""The largest document the validator accepts, plus 1 MiB for the rest of the request."""


def is_loopback_addr(addr: str) -> bool:
    """Whether ``host:port`` only listens on loopback: ``localhost`` or a loopback address (``0.0.0.0``,
    ``::`` and host names are not)."""
    host, _ = parse_addr(addr)
    return is_loopback_host(host)


class ConfigSettings(VgwSettings):
    config_addr: str = Field(default="127.0.0.1:50051", description="host:port the gRPC API listens on")
    config_tls_cert: FilePath | None = Field(default=None, description="PEM certificate: serve gRPC over TLS")
    config_tls_key: FilePath | None = Field(default=None, description="PEM private key of VGW_CONFIG_TLS_CERT")
    config_tls_client_ca: FilePath | None = Field(
        default=None,
        description="PEM CA: every client must present a certificate it signed (mTLS); the role is the "
        "certificate subject's OU (reader, operator or admin), the identity its CN",
    )
    config_tokens_file: FilePath | None = Field(
        default=None,
        description='JSON {"tokens": [{"name", "role", "sha256"}]}: bearer tokens by the SHA-256 of their text; '
        "re-read when it changes",
    )
    config_token: SecretStr | None = Field(
        default=None, description="Legacy single bearer token: role admin, identity token:token"
    )
    config_insecure: bool = Field(
        default=False,
        description="Allow a non-loopback VGW_CONFIG_ADDR without TLS and authentication (local experiments "
        "only; logged loudly, vgw_config_api_insecure 1)",
    )
    config_max_watches: int = Field(default=64, ge=1, le=100_000, description="Concurrent Watch streams, in all")
    config_max_watches_per_identity: int = Field(
        default=8, ge=1, le=100_000, description="Concurrent Watch streams of one identity"
    )
    config_max_request_bytes: int = Field(
        default=DEFAULT_MAX_REQUEST_BYTES,
        ge=64 * 1024,
        le=1 << 30,
        description="Largest request accepted (gRPC message); larger ones fail with RESOURCE_EXHAUSTED",
    )
    config_bucket: str = Field(default=BUCKET, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="JetStream KV bucket")
    config_history: int = Field(default=DEFAULT_RETENTION, ge=2, le=10000, description="Revisions kept")
    config_gc_interval_s: float = Field(default=300.0, gt=0, description="How often unreferenced chunks are deleted")

    @field_validator("config_addr")
    @classmethod
    def _check_addr(cls, v: str) -> str:
        parse_addr(v)
        return v

    @model_validator(mode="after")
    def _check_tls(self) -> ConfigSettings:
        if (self.config_tls_cert is None) != (self.config_tls_key is None):
            raise ValueError("VGW_CONFIG_TLS_CERT and VGW_CONFIG_TLS_KEY must be given together")
        if self.config_tls_client_ca is not None and self.config_tls_cert is None:
            raise ValueError("VGW_CONFIG_TLS_CLIENT_CA (mTLS) needs VGW_CONFIG_TLS_CERT and VGW_CONFIG_TLS_KEY")
        if self.config_tokens_file is not None:
            load_tokens(self.config_tokens_file)  # a bad file stops the start, naming the entry
        if not self.config_loopback and not self.config_secure and not self.config_insecure:
            missing = []
            if self.config_tls_cert is None:
                missing.append("TLS (VGW_CONFIG_TLS_CERT, VGW_CONFIG_TLS_KEY)")
            if not self.config_auth_configured:
                missing.append("authentication (VGW_CONFIG_TLS_CLIENT_CA, VGW_CONFIG_TOKENS_FILE or VGW_CONFIG_TOKEN)")
            raise ValueError(
                f"VGW_CONFIG_ADDR {self.config_addr} is not a loopback address and the config API has no "
                f"{' and no '.join(missing)}: anyone who can reach it could change the configuration. "
                "Configure them (vgwctl security init writes them; docs/config.md, 'Authentication and roles'), "
                "listen on 127.0.0.1, or set VGW_CONFIG_INSECURE=true for a local experiment only"
            )
        return self

    @property
    def config_loopback(self) -> bool:
        return is_loopback_addr(self.config_addr)

    @property
    def config_auth_configured(self) -> bool:
        return any(v is not None for v in (self.config_tls_client_ca, self.config_tokens_file, self.config_token))

    @property
    def config_secure(self) -> bool:
        """TLS and authentication: what a non-loopback listener needs."""
        return self.config_tls_cert is not None and self.config_auth_configured

    @property
    def config_insecure_in_effect(self) -> bool:
        """The insecure switch is what lets this listener start."""
        return not self.config_loopback and not self.config_secure and self.config_insecure
