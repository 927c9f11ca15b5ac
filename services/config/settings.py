"""Settings of the config service (``VGW_*`` environment variables; docs/config.md)."""

from __future__ import annotations

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from vgw.config.store import BUCKET, DEFAULT_RETENTION
from vgw.settings import VgwSettings
from vgw.telemetry.endpoint import parse_addr


class ConfigSettings(VgwSettings):
    config_addr: str = Field(default="127.0.0.1:50051", description="host:port the gRPC API listens on")
    config_tls_cert: FilePath | None = Field(default=None, description="PEM certificate: serve gRPC over TLS")
    config_tls_key: FilePath | None = Field(default=None, description="PEM private key of VGW_CONFIG_TLS_CERT")
    config_token: SecretStr | None = Field(
        default=None, description="Bearer token every ConfigService call must carry (authorization metadata)"
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
        return self
