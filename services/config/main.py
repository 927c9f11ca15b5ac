"""``vgw-config``: the config service process (on the shared runtime, vgw.runtime)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vgw.config.client import MAX_MESSAGE_BYTES, SERVICE
from vgw.config.store import ConfigStore
from vgw.runtime import Runtime, run
from vgw.telemetry.grpc import instrument_grpc_server

from . import metrics
from .api import ConfigApi
from .settings import ConfigSettings

log = logging.getLogger("vgw.config")


class ConfigApp:
    def __init__(self, settings: ConfigSettings) -> None:
        self.settings = settings
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.tasks: list[asyncio.Task[None]] = []
        self.port = 0

    async def start(self, rt: Runtime[ConfigSettings]) -> None:
        s = self.settings
        store = await ConfigStore(rt.bus, s.config_bucket, retention=s.config_history).open()
        rev, _, _, _, _ = await store.current_state()
        metrics.REVISION.set(rev)
        token = s.config_token.get_secret_value() if s.config_token else None
        api = ConfigApi(store, token=token)

        instrument_grpc_server()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ]
        )
        server.add_generic_rpc_handlers((api.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        if s.config_tls_cert is not None and s.config_tls_key is not None:
            creds = grpc.ssl_server_credentials([(s.config_tls_key.read_bytes(), s.config_tls_cert.read_bytes())])
            self.port = server.add_secure_port(s.config_addr, creds)
        else:
            self.port = server.add_insecure_port(s.config_addr)
        await server.start()
        self.server = server
        log.info(
            "ConfigService listening on %s (port %d, %s, revision %d)",
            s.config_addr,
            self.port,
            "TLS" if s.config_tls_cert else "plaintext",
            rev,
            extra={"grpc_port": self.port, "revision": rev},
        )
        rt.health.add_check("grpc", lambda: (self.server is not None, "gRPC server not started"))
        self.tasks.append(asyncio.create_task(self._serving(rt)))
        self.tasks.append(asyncio.create_task(self._gc(store)))

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
                metrics.GC_DELETED.inc(await store.gc())
            except Exception as exc:
                log.warning("chunk GC: %s", exc)

    async def stop(self) -> None:
        await self.health.enter_graceful_shutdown()
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.server is not None:
            await self.server.stop(grace=2.0)


def main() -> None:
    run("config", ConfigApp, ConfigSettings)


if __name__ == "__main__":
    main()
