"""Config documents and a config feed for healthcheck tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from vgw.config import ConfigDocument


def document(checks: list[dict[str, Any]], services: list[dict[str, Any]]) -> ConfigDocument:
    return ConfigDocument.model_validate(
        {
            "version": 1,
            "clusters": [{"name": "lab"}],
            "health_checks": checks,
            "vips": [{"address": "203.0.113.10", "cluster": "lab", "services": services}],
        }
    )


def tcp_check(name: str = "tcp", interval: float = 0.2, rise: int = 2, fall: int = 2, **kw: Any) -> dict[str, Any]:
    return {"name": name, "kind": "tcp", "interval": interval, "timeout": 0.2, "rise": rise, "fall": fall,
            "jitter": 0.0, **kw}  # fmt: skip


def service(name: str, port: int, backends: list[tuple[str, int]], check: str = "tcp", **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "port": port,
        "health_check": check,
        "backends": [{"address": a, "port": p} for a, p in backends],
        **kw,
    }


class Feed:
    """An in-process config feed: what the config store watch yields, driven by the test."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[int, ConfigDocument]] = asyncio.Queue()
        self.revision = 0

    def push(self, doc: ConfigDocument) -> None:
        self.revision += 1
        self.queue.put_nowait((self.revision, doc))

    async def __call__(self) -> AsyncIterator[tuple[int, ConfigDocument]]:
        while True:
            yield await self.queue.get()
