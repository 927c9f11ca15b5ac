"""The configuration store in JetStream KV (bucket ``vgw_config``), and how every service reads it.

Layout (docs/config.md has the why):

* ``chunk.<sha256>`` -- immutable, content-addressed pieces of a document: a JSON array of records
  (:mod:`vgw.config.records`), sharded by a hash of the record key so a change rewrites only the
  shards it touches. Each is well under NATS's 1 MiB payload limit (64 KiB on average).
* ``head`` -- a small :class:`Manifest`: the revision (1, 2, 3...), who/when/why, and the list of
  chunk hashes. An apply writes its new chunks first, then switches ``head`` by compare-and-set on
  its KV sequence. A watcher follows only ``head`` and reads the chunks it names, which already
  exist and never change, so it sees the old revision or the new one -- never half an apply.
* ``rev.<n>`` -- the manifest of every kept revision (history, diff and rollback), written right
  after the head switch and repaired from ``head`` at start if a writer died in between.

Old revisions beyond the retention are pruned, and chunks no kept revision names are deleted once
they are older than a grace period (so an apply in flight elsewhere never loses its chunks).

Consumers use :class:`ConfigReader`: ``current()`` and ``watch()``, which yields the current
revision first, then each new one, and starts over after a reconnect (level-triggered).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from nats.js import api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import BaseModel, ConfigDict, Field

from vgw import metrics
from vgw.bus import Bus
from vgw.events import ChangeCounts, ConfigAction, ConfigChanged
from vgw.jsretry import retrying
from vgw.store import Change, KvStore, RevisionMismatch, Snapshot, create_bucket

from .diff import Diff, diff_records
from .model import ConfigDocument
from .records import Assembler, Encoded, EncodedDoc, RecordEncoder, _Rec, assemble, decode_chunk, gc_paused, settle
from .validate import CheckMemo, ConfigInvalid, semantic_issues

log = logging.getLogger("vgw.config.store")

BUCKET = "vgw_config"
HEAD_KEY = "head"
REV_PREFIX = "rev."
CHUNK_PREFIX = "chunk."
CHUNK_TARGET_BYTES = 64 * 1024
CHUNK_LIMIT_BYTES = 512 * 1024
MAX_SHARDS = 4096
MAX_CHANGED_PATHS = 1000
DEFAULT_RETENTION = 100
CHUNK_GRACE_S = 600.0
_PUT_CONCURRENCY = 64

Action = Literal["apply", "rollback", "backend_state", "node_state"]


class Manifest(BaseModel):
    """One committed revision: what it is made of and who made it, when and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    revision: Annotated[int, Field(ge=1)]
    previous_revision: Annotated[int, Field(ge=0)] = 0
    action: Action
    actor: Annotated[str, Field(max_length=256)]
    reason: Annotated[str, Field(max_length=1024)] = ""
    created_at: datetime
    rolled_back_to: int | None = None
    shards: Annotated[int, Field(ge=1, le=MAX_SHARDS)]
    chunks: list[str]
    records: int = 0
    bytes: int = 0
    services: int = 0
    backends: int = 0
    counts: ChangeCounts = ChangeCounts()
    changed: list[str] = []
    changed_truncated: bool = False


@dataclass(frozen=True, slots=True)
class ConfigRevision:
    revision: int
    document: ConfigDocument
    manifest: Manifest | None
    """None for revision 0: nothing applied yet (the document is empty)."""


@dataclass(frozen=True, slots=True)
class CommitResult:
    revision: int
    """The new revision, or the current one when nothing changed or on a dry run."""
    previous_revision: int
    diff: Diff
    committed: bool
    manifest: Manifest | None


class ConfigConflict(Exception):  # noqa: N818 - a named outcome
    """The store is not at the revision the caller expected."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"expected revision {expected}, but the current revision is {current}")
        self.expected = expected
        self.current = current


class RevisionNotFound(LookupError):  # noqa: N818 - a named outcome
    pass


def _chunk_key(digest: str) -> str:
    return f"{CHUNK_PREFIX}{digest}"


@functools.lru_cache(maxsize=1 << 18)
def _shard_of(key: str, shards: int) -> int:
    return zlib.crc32(key.encode()) % shards


def _build_chunk(lines: Iterable[str]) -> tuple[str, bytes]:
    data = ("[" + ",".join(lines) + "]").encode()
    return hashlib.sha256(data).hexdigest(), data


def _choose_shards(total_bytes: int, previous: int | None) -> int:
    """Shards so chunks average about CHUNK_TARGET_BYTES; keep the previous count while it stays
    within a factor of 4 of that, so small changes never reshuffle every chunk."""
    want = 1
    while want < MAX_SHARDS and total_bytes / want > CHUNK_TARGET_BYTES:
        want *= 2
    if previous is not None and previous / 4 <= want <= previous * 4:
        return previous
    return want


class ConfigReader:
    """Read-only access to the configuration store, with a chunk cache."""

    recheck = True
    """Followers re-validate every revision they read (the writer validated before committing)."""

    def __init__(self, bus: Bus, bucket: str = BUCKET, *, recheck: bool | None = None) -> None:
        self.bus = bus
        self.bucket = bucket
        if recheck is not None:
            self.recheck = recheck
        self._check_memo = CheckMemo()
        self._heads: KvStore[Manifest] | None = None
        self._kv: KeyValue | None = None
        self._kv_generation = -1
        self._assembler = Assembler()

    async def open(self) -> ConfigReader:
        """Bind to the bucket, waiting until the config service has created it (readers never create)."""
        self._heads = await KvStore.attach(self.bus, self.bucket, Manifest, writer="vgw-config")
        return self

    @property
    def heads(self) -> KvStore[Manifest]:
        if self._heads is None:
            raise RuntimeError("ConfigReader.open() was not awaited")
        return self._heads

    async def kv(self) -> KeyValue:
        if self._kv is None or self._kv_generation != self.bus.generation:
            try:
                self._kv = await retrying("kv_bind", lambda: self.bus.js.key_value(self.bucket), what=self.bucket)
            except (BucketNotFoundError, NotFoundError):
                await self.heads.get(HEAD_KEY)  # KvStore re-binds (and reports) a missing bucket
                self._kv = await self.bus.js.key_value(self.bucket)
            self._kv_generation = self.bus.generation
        return self._kv

    async def head(self) -> tuple[Manifest | None, int]:
        """The current manifest and the KV sequence of ``head`` (0 when nothing is applied)."""
        e = await self.heads.get(HEAD_KEY)
        return (e.value, e.revision) if e is not None else (None, 0)

    async def manifest(self, revision: int) -> Manifest:
        e = await self.heads.get(f"{REV_PREFIX}{revision}")
        if e is None:
            head, _ = await self.head()
            if head is not None and head.revision == revision:
                return head
            raise RevisionNotFound(f"revision {revision} is not kept (pruned, or never existed)")
        return e.value

    async def _chunk(self, kv: KeyValue, digest: str) -> tuple[str, list[_Rec]]:
        try:
            e = await retrying("kv_get", lambda: kv.get(_chunk_key(digest)), what=f"{self.bucket}/chunk")
        except KeyNotFoundError:
            raise RevisionNotFound(f"chunk {digest[:12]} is missing") from None
        if e.operation in (KV_DEL, KV_PURGE) or e.value is None:
            raise RevisionNotFound(f"chunk {digest[:12]} was deleted")
        if hashlib.sha256(e.value).hexdigest() != digest:
            raise RevisionNotFound(f"chunk {digest[:12]} is corrupt (hash mismatch)")
        return digest, decode_chunk(e.value)

    async def load(self, manifest: Manifest, *, keep_cache: bool = False) -> ConfigDocument:
        """The document of a manifest, fetching only chunks not already held. The default follows
        the store (the reader's view moves to this manifest); ``keep_cache=True`` reads another
        revision (history) without moving the view."""
        kv = await self.kv()
        have = self._assembler.chunks
        missing = [h for h in dict.fromkeys(manifest.chunks) if h not in have]
        sem = asyncio.Semaphore(_PUT_CONCURRENCY)

        async def fetch(h: str) -> tuple[str, list[_Rec]]:
            async with sem:
                return await self._chunk(kv, h)

        fetched = dict(await asyncio.gather(*(fetch(h) for h in missing)))
        if keep_cache:
            return assemble([r for h in manifest.chunks for r in (have.get(h) or fetched[h])])
        doc = self._assembler.update(manifest.chunks, fetched)
        settle(sum(len(v) for v in fetched.values()))
        return doc

    async def current(self) -> ConfigRevision:
        """The current revision (revision 0 with an empty document when nothing was applied)."""
        for _ in range(5):
            manifest, _seq = await self.head()
            if manifest is None:
                return ConfigRevision(0, ConfigDocument(), None)
            try:
                return ConfigRevision(manifest.revision, await self.load(manifest), manifest)
            except RevisionNotFound as exc:  # pruned under us by a newer head: read the head again
                log.warning("loading revision %d: %s; retrying", manifest.revision, exc)
                await asyncio.sleep(0.1)
        raise RevisionNotFound("could not load the current revision")

    async def revision(self, revision: int) -> ConfigRevision:
        if revision == 0:
            return ConfigRevision(0, ConfigDocument(), None)
        manifest = await self.manifest(revision)
        return ConfigRevision(revision, await self.load(manifest, keep_cache=True), manifest)

    async def watch(self) -> AsyncIterator[ConfigRevision]:
        """The current revision, then every new one as a whole; after a reconnect, the current one
        again. Revision 0 (an empty document) when nothing was applied yet."""
        last = -1
        async for ev in self.heads.watch(HEAD_KEY):
            if isinstance(ev, Snapshot):
                entry = ev.entries.get(HEAD_KEY)
                last = -1  # a snapshot is authoritative: always deliver it
            elif isinstance(ev, Change):
                entry = ev.entry
                if entry is None:
                    continue
            else:  # pragma: no cover - exhaustive
                continue
            if entry is None:
                last = 0
                yield ConfigRevision(0, ConfigDocument(), None)
                continue
            manifest = entry.value
            if manifest.revision == last:
                continue
            try:
                doc = await self.load(manifest)
            except RevisionNotFound as exc:
                log.warning("revision %d: %s; waiting for the next head", manifest.revision, exc)
                continue
            if self.recheck and not self._trusted(manifest.revision, doc):
                last = manifest.revision
                continue
            last = manifest.revision
            yield ConfigRevision(manifest.revision, doc, manifest)

    def _trusted(self, revision: int, doc: ConfigDocument) -> bool:
        """Check a stored document as the config service did before committing it.

        Each record was validated when decoded; what relates records to each other was not. Only the
        config service may write the bucket, but a follower that programs a forwarder or announces
        routes does not bet the network on that: a revision that fails is skipped and the last good
        one stays in force.
        """
        issues = semantic_issues(doc, self._check_memo)
        if not issues:
            return True
        metrics.CONFIG_REVISIONS_REJECTED.inc()
        shown = "; ".join(str(i) for i in issues[:3])
        log.error(
            "config revision %d read from the store is invalid (%d issues: %s); keeping the last good revision",
            revision,
            len(issues),
            shown,
            extra={"revision": revision, "issues": len(issues)},
        )
        return False


class ConfigStore(ConfigReader):
    """The writer: atomic applies with optimistic concurrency, history, rollback, pruning."""

    recheck = False

    def __init__(self, bus: Bus, bucket: str = BUCKET, *, retention: int = DEFAULT_RETENTION) -> None:
        super().__init__(bus, bucket)
        self.retention = retention
        self._encoder = RecordEncoder()
        self._lock = asyncio.Lock()
        self._cur: tuple[int, ConfigDocument, EncodedDoc, Manifest | None] | None = None

    async def open(self, *, create: bool = True) -> ConfigStore:
        if self._heads is None:
            try:
                await retrying("kv_bind", lambda: self.bus.js.key_value(self.bucket), what=self.bucket)
            except (BucketNotFoundError, NotFoundError):
                if not create:
                    raise
                cfg = api.KeyValueConfig(
                    bucket=self.bucket, history=1, storage=api.StorageType.FILE, replicas=self.bus.js_replicas
                )
                await create_bucket(self.bus, cfg)
            # KvStore.open checks the bucket's replicas against VGW_JS_REPLICAS (vgw.jsreplicas)
            self._heads = await KvStore.open(self.bus, self.bucket, Manifest, create=False)
        await self.repair()
        return self

    async def repair(self) -> None:
        """Write ``rev.<n>`` for the head if a writer died between the head switch and it."""
        manifest, _ = await self.head()
        if manifest is not None and await self.heads.get(f"{REV_PREFIX}{manifest.revision}") is None:
            log.warning("history record of revision %d was missing; restored from head", manifest.revision)
            await self.heads.put(f"{REV_PREFIX}{manifest.revision}", manifest)

    async def current_state(self) -> tuple[int, ConfigDocument, EncodedDoc, Manifest | None, int]:
        """(revision, document, encoded records, manifest, head KV sequence), cached by revision."""
        manifest, seq = await self.head()
        rev = manifest.revision if manifest else 0
        if self._cur is not None and self._cur[0] == rev:
            return (*self._cur, seq)
        doc = await self.load(manifest) if manifest is not None else ConfigDocument()
        records = self._encoder.encode(doc) if manifest is not None else EncodedDoc()
        self._cur = (rev, doc, records, manifest)
        settle(len(records))
        return rev, doc, records, manifest, seq

    async def commit(
        self,
        doc: ConfigDocument,
        *,
        actor: str,
        reason: str = "",
        action: Action = "apply",
        expected_revision: int | None = None,
        dry_run: bool = False,
        rolled_back_to: int | None = None,
    ) -> CommitResult:
        """Store ``doc`` (already validated) as the next revision, atomically.

        ``expected_revision`` (0 = empty store) makes it conditional: :class:`ConfigConflict` when
        the store is elsewhere. Without it the commit goes on top of whatever is current (retrying
        a lost race). A document equal to the current one commits nothing."""
        async with self._lock:
            attempts = 1 if expected_revision is not None else 5
            for attempt in range(attempts):
                rev, _cur_doc, cur_records, cur_manifest, seq = await self.current_state()
                if expected_revision is not None and expected_revision != rev:
                    raise ConfigConflict(expected_revision, rev)
                records = self._encoder.encode(doc, base=cur_records)
                changed = records.changed_since(cur_records)
                diff = diff_records(cur_records, records, keys=changed)
                if dry_run or diff.empty:
                    return CommitResult(rev, rev, diff, False, cur_manifest)
                manifest = await self._write(doc, records, cur_records, cur_manifest, diff, action, actor, reason)
                manifest = manifest.model_copy(update={"rolled_back_to": rolled_back_to})
                try:
                    if cur_manifest is None:
                        await self.heads.create(HEAD_KEY, manifest)
                    else:
                        await self.heads.update(HEAD_KEY, manifest, expected_revision=seq)
                except RevisionMismatch:
                    self._cur = None
                    now, _ = await self.head()
                    current = now.revision if now else 0
                    if expected_revision is not None or attempt == attempts - 1:
                        raise ConfigConflict(
                            expected_revision if expected_revision is not None else rev, current
                        ) from None
                    continue
                self._cur = (manifest.revision, doc, records, manifest)
                settle(len(records.fresh))
                await self.heads.put(f"{REV_PREFIX}{manifest.revision}", manifest)
                await self._publish(manifest)
                await self._prune(manifest.revision)
                return CommitResult(manifest.revision, rev, diff, True, manifest)
        raise AssertionError("unreachable")

    async def _write(
        self,
        doc: ConfigDocument,
        records: EncodedDoc,
        previous: dict[str, Encoded],
        prev_manifest: Manifest | None,
        diff: Diff,
        action: Action,
        actor: str,
        reason: str,
    ) -> Manifest:
        """Write the chunks the new revision needs and return its manifest (head not switched)."""
        with gc_paused():
            shards, chunks, built = self._chunks_for(records, previous, prev_manifest)
            total = records.total_bytes
        kv = await self.kv()
        known = set(prev_manifest.chunks) if prev_manifest else set()
        sem = asyncio.Semaphore(_PUT_CONCURRENCY)

        async def put(digest: str, data: bytes) -> None:
            # content-addressed: writing a chunk again (a retry after a lost answer) changes nothing
            async with sem:
                await retrying("kv_put", lambda: kv.put(_chunk_key(digest), data), what=f"{self.bucket}/chunk")

        to_put = {d: data for d, data in built.values() if d not in known}
        await asyncio.gather(*(put(d, data) for d, data in to_put.items()))
        for s, (digest, _) in built.items():
            chunks[s] = digest
        counts = diff.counts()
        paths = diff.paths()
        return Manifest(
            revision=(prev_manifest.revision if prev_manifest else 0) + 1,
            previous_revision=prev_manifest.revision if prev_manifest else 0,
            action=action,
            actor=actor[:256],
            reason=reason[:1024],
            created_at=datetime.now(UTC),
            shards=shards,
            chunks=chunks,
            records=len(records),
            bytes=total,
            services=sum(len(v.services) for v in doc.vips),
            backends=sum(len(s.backends) for v in doc.vips for s in v.services),
            counts=ChangeCounts(**counts),
            changed=paths[:MAX_CHANGED_PATHS],
            changed_truncated=len(paths) > MAX_CHANGED_PATHS,
        )

    @staticmethod
    def _chunks_for(
        records: EncodedDoc, previous: dict[str, Encoded], prev_manifest: Manifest | None
    ) -> tuple[int, list[str], dict[int, tuple[str, bytes]]]:
        """(shard count, chunk list with unchanged shards filled in, built chunks by shard)."""
        shards = _choose_shards(records.total_bytes, prev_manifest.shards if prev_manifest else None)
        changed = records.changed_since(previous)
        while True:
            if prev_manifest is not None and prev_manifest.shards == shards:
                if changed is not None:
                    dirty = {_shard_of(k, shards) for k in changed}
                else:
                    dirty = {
                        _shard_of(k, shards)
                        for k, e in records.items()
                        if (p := previous.get(k)) is not e and (p is None or p.line != e.line)
                    }
                    dirty |= {_shard_of(k, shards) for k in previous if k not in records}
                chunks = list(prev_manifest.chunks)
            else:
                dirty = set(range(shards))
                chunks = [""] * shards
            groups: dict[int, list[str]] = {s: [] for s in dirty}
            keys = [k for k in records if _shard_of(k, shards) in groups]
            for key in sorted(keys):
                groups[_shard_of(key, shards)].append(records[key].line)
            built = {s: _build_chunk(lines) for s, lines in groups.items()}
            if any(len(data) > CHUNK_LIMIT_BYTES for _, data in built.values()) and shards < MAX_SHARDS:
                shards *= 2
                continue
            return shards, chunks, built

    async def _publish(self, m: Manifest) -> None:
        try:
            await self.bus.publish(
                ConfigChanged(
                    revision=m.revision,
                    previous_revision=m.previous_revision,
                    action=ConfigAction(m.action),
                    actor=m.actor,
                    reason=m.reason,
                    rolled_back_to=m.rolled_back_to,
                    counts=m.counts,
                    changed=m.changed,
                    changed_truncated=m.changed_truncated,
                )
            )
        except Exception:  # the bus keeps it in its outbox; never fail a committed apply
            log.exception("publishing config.changed for revision %d", m.revision)

    async def _prune(self, revision: int) -> None:
        oldest_kept = revision - self.retention + 1
        n = oldest_kept - 1
        while n >= 1:
            key = f"{REV_PREFIX}{n}"
            if await self.heads.get(key) is None:
                break
            await self.heads.delete(key)
            n -= 1

    async def history(self, limit: int = 20, before: int | None = None) -> list[Manifest]:
        """Kept revisions, newest first."""
        manifest, _ = await self.head()
        if manifest is None:
            return []
        n = manifest.revision if before is None else min(before - 1, manifest.revision)
        out: list[Manifest] = []
        while n >= 1 and len(out) < limit:
            e = await self.heads.get(f"{REV_PREFIX}{n}")
            if e is None:
                if n == manifest.revision:
                    out.append(manifest)
                    n -= 1
                    continue
                break
            out.append(e.value)
            n -= 1
        return out

    async def rollback(
        self, to_revision: int, *, actor: str, reason: str = "", expected_revision: int | None = None
    ) -> CommitResult:
        """Make a kept older revision's document current again, as a new revision."""
        old = await self.revision(to_revision)
        issues = semantic_issues(old.document)
        if issues:
            raise ConfigInvalid(issues)
        return await self.commit(
            old.document,
            actor=actor,
            reason=reason or f"rollback to revision {to_revision}",
            action="rollback",
            expected_revision=expected_revision,
            rolled_back_to=to_revision,
        )

    async def gc(self, grace_s: float = CHUNK_GRACE_S) -> int:
        """Delete chunks that no kept revision names and that are older than ``grace_s``."""
        manifest, _ = await self.head()
        if manifest is None:
            return 0
        referenced = set(manifest.chunks)
        for m in await self.history(limit=self.retention + 1):
            referenced.update(m.chunks)
        kv = await self.kv()
        watcher = await kv.watch(f"{CHUNK_PREFIX}>", meta_only=True, ignore_deletes=True)
        old: list[str] = []
        cutoff = datetime.now(UTC) - timedelta(seconds=grace_s)
        try:
            while True:
                e = await watcher.updates(timeout=5.0)
                if e is None:
                    break
                digest = e.key[len(CHUNK_PREFIX) :]
                created = e.created
                if digest not in referenced and (created is None or created.replace(tzinfo=UTC) < cutoff):
                    old.append(e.key)
                if not e.delta:
                    break
        finally:
            await watcher.stop()
        for key in old:
            await kv.purge(key)
        if old:
            log.info("deleted %d unreferenced chunks", len(old))
        return len(old)
