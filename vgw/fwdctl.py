"""Client for vgw-fwd's control socket (protocol in docs/forwarder.md).

Frames are a 16-byte header -- magic ``VGWC``, version (1), type, flags (16 bits), payload length
(32 bits) and request id (32 bits), big-endian -- followed by the payload. A reply has the request's
type with bit 0x80 set and flag 0x0001 on error; its payload is text (JSON for HELLO, STATS, NEIGH).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
from typing import Any

MAGIC = b"VGWC"
VERSION = 1
HEADER = struct.Struct("!4sBBHII")

HELLO = 1
APPLY = 2
DELTA = 3
STATS = 4
CONFIG = 5
NEIGH = 6

REPLY_BIT = 0x80
F_ERROR = 0x0001
MAX_REPLY = 64 << 20


class FwdError(Exception):
    """The forwarder rejected a request (its reason is the message)."""


class FwdUnavailableError(ConnectionError):
    """The control socket is not there or the connection broke."""


def frame(
    msg_type: int, payload: bytes = b"", req_id: int = 0, *, version: int = VERSION, magic: bytes = MAGIC
) -> bytes:
    """Encode one request frame (tests use the keyword arguments to build bad ones)."""
    return HEADER.pack(magic, version, msg_type, 0, len(payload), req_id) + payload


class FwdClient:
    """One connection to the control socket; requests are serialised (one in flight)."""

    def __init__(self, path: str, timeout_s: float = 10.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path, limit=MAX_REPLY), self.timeout_s
            )
        except (OSError, TimeoutError) as exc:
            raise FwdUnavailableError(f"{self.path}: {exc}") from exc

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def request(self, msg_type: int, payload: bytes = b"") -> bytes:
        async with self._lock:
            if not self.connected:
                await self.connect()
            assert self._reader is not None and self._writer is not None
            req_id = next(self._ids) & 0xFFFFFFFF
            try:
                self._writer.write(frame(msg_type, payload, req_id))
                await self._writer.drain()
                head = await asyncio.wait_for(self._reader.readexactly(HEADER.size), self.timeout_s)
                magic, _version, rtype, flags, length, rid = HEADER.unpack(head)
                if magic != MAGIC or length > MAX_REPLY:
                    raise FwdUnavailableError("bad reply frame")
                body = await asyncio.wait_for(self._reader.readexactly(length), self.timeout_s)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                await self.close()
                raise FwdUnavailableError(f"{self.path}: {exc!r}") from exc
            if rtype != (msg_type | REPLY_BIT) or rid != req_id:
                await self.close()
                raise FwdUnavailableError("reply does not match the request")
            if flags & F_ERROR:
                raise FwdError(body.decode("utf-8", "replace"))
            return body

    async def hello(self) -> dict[str, Any]:
        return dict(json.loads(await self.request(HELLO)))

    async def stats(self) -> dict[str, Any]:
        return dict(json.loads(await self.request(STATS)))

    async def neighbours(self) -> list[dict[str, Any]]:
        return list(json.loads(await self.request(NEIGH)))

    async def config(self) -> str:
        return (await self.request(CONFIG)).decode()

    async def apply(self, document: str) -> int:
        """Apply a full ``vgw-config 1`` document; returns the applied generation."""
        return _generation(await self.request(APPLY, document.encode()))

    async def delta(self, document: str) -> int:
        """Apply a ``vgw-delta 1`` document; returns the applied generation."""
        return _generation(await self.request(DELTA, document.encode()))


def _generation(reply: bytes) -> int:
    text = reply.decode()
    word, _, number = text.partition(" ")
    if word != "generation" or not number.isdigit():
        raise FwdUnavailableError(f"unexpected reply {text!r}")
    return int(number)


async def _main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m vgw.fwdctl", description="talk to vgw-fwd")
    parser.add_argument("--socket", default="/run/vgw-fwd.sock")
    parser.add_argument("command", choices=["hello", "stats", "config", "neigh", "apply", "delta"])
    parser.add_argument("file", nargs="?", help="document for apply/delta (- for stdin)")
    args = parser.parse_args(argv)
    client = FwdClient(args.socket)
    try:
        if args.command in ("apply", "delta"):
            text = sys.stdin.read() if args.file in (None, "-") else open(args.file).read()  # noqa: SIM115, ASYNC230
            gen = await (client.apply(text) if args.command == "apply" else client.delta(text))
            print(f"generation {gen}")
        elif args.command == "config":
            print(await client.config(), end="")
        else:
            fn = {"hello": client.hello, "stats": client.stats, "neigh": client.neighbours}[args.command]
            print(json.dumps(await fn(), indent=2))
    except (FwdError, FwdUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(_main()))
