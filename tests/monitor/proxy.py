"""A TCP proxy in front of nats-server for one client, which the test can cut: a partition.

Cut, it keeps the connections open but forwards nothing either way (what a network partition looks
like to both ends: silence, no reset). Healed, it closes what was cut (the byte streams have holes)
and forwards again, so the client reconnects as after any outage."""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.nats_server import free_port


class CuttableProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.cut = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            if self.cut:
                continue  # lost in the partition
            dst.write(data)
            await dst.drain()
        dst.close()

    def partition(self) -> None:
        self.cut = True

    def heal(self) -> None:
        """Forward again; the connections that lived through the cut are closed (the client reconnects)."""
        for w in list(self._writers):
            w.close()
        self._writers.clear()
        self.cut = False

    async def close(self) -> None:
        self.heal()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
