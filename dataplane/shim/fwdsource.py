"""Where a node's forwarder settings come from: the config document (a file, or the config store over
NATS) and the per-node device names (a small YAML map), for ``vgw-fwd-config`` (:mod:`.fwdargs`).

The store is read like every VGW consumer reads it (:class:`vgw.config.store.ConfigReader`): the
current committed revision, whole. A node that boots before the config service, before NATS, or
before its node is in the document waits for it, saying what it waits for, until a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from nats.js.errors import BucketNotFoundError, NotFoundError
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from vgw.bus import Bus
from vgw.config import ConfigDocument
from vgw.config.store import BUCKET, ConfigReader
from vgw.config.validate import ConfigInvalid, load_document, semantic_issues
from vgw.settings import VgwSettings

PROGRESS_EVERY_S = 5.0


class SourceError(Exception):
    """Bad input: the document, the devices file or the settings (nothing is written; exit 2)."""


class GaveUp(Exception):  # noqa: N818 - an outcome: the wait ran out
    """The live config was not available before the deadline (exit 1)."""


class _NotYet(Exception):  # noqa: N818 - one attempt's reason to try again
    pass


@dataclass(frozen=True)
class Loaded:
    doc: ConfigDocument
    origin: str  # for the rendered file's header: the path, or the store's revision


def from_file(path: str) -> Loaded:
    try:
        with open(path, "rb") as f:
            return Loaded(load_document(f.read()), path)
    except (OSError, ConfigInvalid) as exc:
        raise SourceError(f"{path}: {exc}") from exc


async def from_store(
    settings: VgwSettings,
    node_id: str,
    wait_s: float,
    say: Callable[[str], None],
    bucket: str = BUCKET,
) -> Loaded:
    """The current revision of the config store once it has node_id; ``wait_s`` 0 tries once."""
    read = _StoreRead(settings, node_id, bucket)
    try:
        return await _retry(read.attempt, wait_s, say)
    finally:
        await read.close()


class _StoreRead:
    """Attempts at reading one node's config from the store; the connection and the bucket's
    binding are kept from one attempt to the next."""

    def __init__(self, settings: VgwSettings, node_id: str, bucket: str) -> None:
        self.settings, self.node_id, self.bucket = settings, node_id, bucket
        self.bus = Bus(settings.nats_options(), source=f"/vgw/fwd-config/{node_id}", identity=settings.nats_identity)
        self.reader = ConfigReader(self.bus, bucket)
        self.opened = False

    async def attempt(self) -> Loaded:
        try:
            return await self._read()
        except (_NotYet, SourceError):
            raise
        except Exception as exc:  # a read cut short (NATS lost, a timeout, a refused request): again
            raise _NotYet(f"the config store ({type(exc).__name__}: {exc})") from exc

    async def _read(self) -> Loaded:
        if not self.bus.is_connected:
            try:
                await self.bus.connect()
            except Exception as exc:
                raise _NotYet(f"NATS at {self.settings.nats_url}: {exc or type(exc).__name__}") from exc
        if not self.opened:
            try:
                await self.bus.js.key_value(self.bucket)
            except (BucketNotFoundError, NotFoundError):
                raise _NotYet(f"the config store (KV bucket {self.bucket}; the config service creates it)") from None
            await self.reader.open()
            self.opened = True
        rev = await self.reader.current()
        if rev.revision == 0:
            raise _NotYet("a configuration (nothing applied yet: vgwctl apply)")
        if rev.document.node(self.node_id) is None:
            raise _NotYet(f"node {self.node_id!r} in the configuration (revision {rev.revision} has no such node)")
        if self.settings.config_recheck:
            issues = semantic_issues(rev.document)
            if issues:
                raise SourceError(f"revision {rev.revision} in the store is invalid: {'; '.join(map(str, issues[:3]))}")
        return Loaded(rev.document, f"config store revision {rev.revision}")

    async def close(self) -> None:
        if self.bus.is_connected:
            await self.bus.close()


async def _retry(attempt: Callable[[], Awaitable[Loaded]], wait_s: float, say: Callable[[str], None]) -> Loaded:
    t0 = time.monotonic()
    last_said, last_reason = -PROGRESS_EVERY_S, ""
    delay = 0.2
    while True:
        try:
            return await attempt()
        except _NotYet as exc:
            waited = time.monotonic() - t0
            if waited >= wait_s:
                raise GaveUp(f"gave up after {waited:.0f}s waiting for {exc}") from None
            # say it at once when the reason changes, then every few seconds
            if str(exc) != last_reason or waited - last_said >= PROGRESS_EVERY_S:
                say(f"waiting for {exc} ({waited:.0f}s of {wait_s:.0f}s)")
                last_said, last_reason = waited, str(exc)
            await asyncio.sleep(min(delay, max(0.0, wait_s - waited)))
            delay = min(delay * 2, 2.0)


class _Devices(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    ext: str | None = Field(default=None, min_length=1)
    int_: str | None = Field(default=None, min_length=1, alias="int")


_DeviceMap = RootModel[dict[str, _Devices]]


def load_devices(path: str, node_id: str) -> tuple[str | None, str | None]:
    """The node's (ext, int) devices from a ``{node id: {ext: DEV, int: DEV}}`` map (YAML or JSON);
    (None, None) when the map has no entry for the node."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        devices = _DeviceMap.model_validate(raw).root
    except (OSError, yaml.YAMLError) as exc:
        raise SourceError(f"devices file {path}: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise SourceError(
            f"devices file {path}: {where}: {first['msg']} (expected {{node id: {{ext: DEV, int: DEV}}}})"
        ) from None
    entry = devices.get(node_id)
    return (entry.ext, entry.int_) if entry else (None, None)
