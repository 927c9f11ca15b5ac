"""``vgw-config``: the config service process (on the shared runtime, vgw.runtime)."""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vgw.config.client import MAX_MESSAGE_BYTES, SERVICE
from vgw.config.store import ConfigStore
from vgw.runtime import Runtime, run
from vgw.supervise import Supervisor
from vgw.telemetry.grpc import instrument_grpc_server

from . import metrics
from .api import ConfigApi
from .auth import Authenticator
from .settings import ConfigSettings

log = logging.getLogger("vgw.config")


class ConfigApp:
    def __init__(self, settings: ConfigSettings) -> None:
        self.settings = settings
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.supervisor: Supervisor | None = None
        self.port = 0

    async def start(self, rt: Runtime[ConfigSettings]) -> None:
        s = self.settings
        store = await ConfigStore(rt.bus, s.config_bucket, retention=s.config_history).open()
        rev, _, _, _, _ = await store.current_state()
        metrics.REVISION.set(rev)
        auth = Authenticator(
            mtls=s.config_tls_client_ca is not None,
            tokens_file=s.config_tokens_file,
            legacy_token=s.config_token.get_secret_value() if s.config_token else None,
            loopback=s.config_loopback,
        )
        api = ConfigApi(
            store,
            auth=auth,
            max_watches=s.config_max_watches,
            max_watches_per_identity=s.config_max_watches_per_identity,
        )
        self._log_security(auth)

        instrument_grpc_server()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", s.config_max_request_bytes),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ]
        )
        server.add_generic_rpc_handlers((api.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        if s.config_tls_cert is not None and s.config_tls_key is not None:
            # gRPC's server either requires a verified client certificate or asks for none (there is
            # no "optional"): with a client CA, every client presents one, and a token may come on top.
            client_ca = s.config_tls_client_ca.read_bytes() if s.config_tls_client_ca is not None else None
            creds = grpc.ssl_server_credentials(
                [(s.config_tls_key.read_bytes(), s.config_tls_cert.read_bytes())],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
            self.port = server.add_secure_port(s.config_addr, creds)
        else:
            self.port = server.add_insecure_port(s.config_addr)
        await server.start()
        self.server = server
        transport = "mTLS" if s.config_tls_client_ca else "TLS" if s.config_tls_cert else "plaintext"
        log.info(
            "ConfigService listening on %s (port %d, %s, %s, revision %d)",
            s.config_addr,
            self.port,
            transport,
            self._auth_summary(auth),
            rev,
            extra={"grpc_port": self.port, "revision": rev, "transport": transport},
        )
        rt.health.add_check("grpc", lambda: (self.server is not None, "gRPC server not started"))
        self.supervisor = rt.supervisor
        rt.supervisor.spawn("grpc-health", lambda: self._serving(rt))
        rt.supervisor.spawn("chunk-gc", lambda: self._gc(store))

    def _auth_summary(self, auth: Authenticator) -> str:
        s = self.settings
        parts = []
        if s.config_tls_client_ca is not None:
            parts.append("client certificates")
        if s.config_tokens_file is not None:
            n = len(auth.tokens.entries) if auth.tokens is not None else 0
            parts.append(f"{n} token(s) from {s.config_tokens_file}")
        if s.config_token is not None:
            parts.append("the legacy token")
        return "authentication: " + (", ".join(parts) if parts else "none")

    def _log_security(self, auth: Authenticator) -> None:
        s = self.settings
        metrics.INSECURE.set(1 if s.config_insecure_in_effect else 0)
        if s.config_insecure_in_effect:
            log.warning(
                "INSECURE: VGW_CONFIG_INSECURE=true and the config API listens on %s without %s: anyone who "
                "can reach it can read and change the configuration, and the actor recorded is whatever the "
                "client claims. For local experiments only (vgw_config_api_insecure 1)",
                s.config_addr,
                "TLS and authentication" if not s.config_tls_cert else "authentication",
                extra={"insecure": True},
            )
        elif not auth.enabled:
            log.warning(
                "the config API on %s has no authentication: every local user of this host is admin and the "
                "recorded actor is what the client claims (local:<actor>). Configure VGW_CONFIG_TOKENS_FILE or "
                "VGW_CONFIG_TLS_CLIENT_CA (vgwctl security init) to change that",
                s.config_addr,
            )
        elif s.config_insecure:
            log.info("VGW_CONFIG_INSECURE=true has no effect: the config API is on loopback or secured")

    async def _serving(self, rt: Runtime[ConfigSettings]) -> None:
        """gRPC health follows the NATS connection: the store is only usable while it is up."""
        last: bool | None = None
        while True:
            up = rt.bus.is_connected
            if up != last:
                status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
                await self.health.set("", status)
                await self.health.set(SERVICE, status)
                last = up
            await asyncio.sleep(0.5)

    async def _gc(self, store: ConfigStore) -> None:
        while True:
            await asyncio.sleep(self.settings.config_gc_interval_s)
            try:
                deleted = await store.gc()
            except Exception as exc:  # NATS away, a leader election: the next round tries again
                log.warning("chunk GC: %s", exc)
                continue
            metrics.GC_DELETED.inc(deleted)

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop("grpc-health", "chunk-gc")
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace=2.0)


def main() -> None:
    run("config", ConfigApp, ConfigSettings)


if __name__ == "__main__":
    main()
