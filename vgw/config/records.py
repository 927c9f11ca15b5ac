"""A document as records: one per object (settings, cluster, node, health check, VIP, service).

The store shards records into content-addressed chunks, and the diff compares records, so both
only touch what changed. Record keys are the object paths used everywhere else (events, diffs):
``settings``, ``clusters/<name>``, ``nodes/<id>``, ``health_checks/<name>``, ``vips/<address>``,
``services/<name>``. A service record carries its VIP's address and its position in the VIP.

:class:`RecordEncoder` remembers the JSON of the objects of the last document it encoded, by
identity, so encoding a document derived from the previous one (a backend state change) costs
only the objects that were replaced.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .model import SCHEMA_VERSION, Cluster, ConfigDocument, HealthCheck, Node, Service, Timeouts, Vip, VipSpec


class DocumentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    version: Literal[1] = SCHEMA_VERSION
    timeouts: Timeouts = Timeouts()


class _Rec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    k: str
    i: int


class SettingsRec(_Rec):
    t: Literal["settings"]
    v: DocumentSettings


class ClusterRec(_Rec):
    t: Literal["cluster"]
    v: Cluster


class NodeRec(_Rec):
    t: Literal["node"]
    v: Node


class CheckRec(_Rec):
    t: Literal["check"]
    v: HealthCheck


class VipRec(_Rec):
    t: Literal["vip"]
    v: VipSpec


class ServiceRec(_Rec):
    t: Literal["service"]
    vip: str
    v: Service


Record = Annotated[
    SettingsRec | ClusterRec | NodeRec | CheckRec | VipRec | ServiceRec,
    Field(discriminator="t"),
]
RECORDS = TypeAdapter(list[Record])


@dataclass(frozen=True, slots=True)
class Encoded:
    """One record: its key, its JSON line (what chunks hold) and the object's own JSON."""

    key: str
    kind: str
    index: int
    value_json: str
    line: str
    obj: BaseModel
    vip: str | None = None


FREEZE_RECORDS = 2000
"""After building this many new records at once, freeze the collector's view (see settle)."""


def settle(new_records: int) -> None:
    """After a large document was built (and will live long), move every object alive now into
    the collector's permanent generation (``gc.freeze``). A configuration is long-lived and
    acyclic (reference counting frees a replaced revision), and with 100k backends it is about a
    million objects: left in the old generation, every full collection rescans them all and
    stalls the process for hundreds of milliseconds, which is what a watcher's latency would show.
    Small revisions do not freeze, so only what large loads left alive is ever pinned."""
    if new_records >= FREEZE_RECORDS:
        gc.freeze()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC while building big, short-lived structures: otherwise their temporaries get
    promoted to the old generation and trigger full collections (hundreds of ms with a 10k-service
    document in memory). Reference counting still frees everything as usual."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class RecordEncoder:
    """Encodes documents into records; objects seen in the previous document (by identity) at the
    same position reuse their record, so a small edit costs only what it replaced."""

    def __init__(self) -> None:
        self._cache: dict[int, Encoded] = {}

    def encode(self, doc: ConfigDocument) -> dict[str, Encoded]:
        with gc_paused():
            return self._encode(doc)

    def _encode(self, doc: ConfigDocument) -> dict[str, Encoded]:
        old = self._cache
        cache: dict[int, Encoded] = {}
        out: dict[str, Encoded] = {}

        def add(kind: str, key: str, index: int, obj: BaseModel, vip: str | None = None) -> None:
            hit = old.get(id(obj))
            if hit is not None and hit.obj is obj and hit.index == index and hit.vip == vip:
                enc = hit
            else:
                js = obj.model_dump_json(exclude={"services"} if kind == "vip" else None)
                kq = json.dumps(key)
                vip_part = f',"vip":"{vip}"' if vip is not None else ""
                line = f'{{"t":"{kind}","k":{kq},"i":{index}{vip_part},"v":{js}}}'
                enc = Encoded(key=key, kind=kind, index=index, value_json=js, line=line, obj=obj, vip=vip)
            cache[id(obj)] = enc
            out[key] = enc

        settings = DocumentSettings(version=doc.version, timeouts=doc.timeouts)
        add("settings", "settings", 0, settings)
        for i, c in enumerate(doc.clusters):
            add("cluster", f"clusters/{c.name}", i, c)
        for i, n in enumerate(doc.nodes):
            add("node", f"nodes/{n.id}", i, n)
        for i, h in enumerate(doc.health_checks):
            add("check", f"health_checks/{h.name}", i, h)
        for i, v in enumerate(doc.vips):
            addr = str(v.address)
            add("vip", f"vips/{addr}", i, v)
            for j, s in enumerate(v.services):
                hit = old.get(id(s))
                if hit is not None and hit.obj is s and hit.index == j and hit.vip == addr:
                    cache[id(s)] = hit
                    out[hit.key] = hit
                else:
                    add("service", f"services/{s.name}", j, s, vip=addr)
        self._cache = cache
        return out


def decode_chunk(data: bytes) -> list[_Rec]:
    """The records of one chunk (a JSON array of record lines)."""
    with gc_paused():
        return list(RECORDS.validate_json(data))


def assemble(records: Iterable[_Rec]) -> ConfigDocument:
    """Build the document from its records without validating again (records were validated when
    decoded, and the whole document when it was applied)."""
    return Assembler().update(["all"], {"all": list(records)})


class Assembler:
    """Follows a store revision by revision: keeps the records of the current chunks, and on each
    update removes the records of chunks that went away, adds those of new chunks, and rebuilds
    only the lists and VIPs they touched. Untouched VIP objects are reused, so following a
    10k-service document costs about the size of what changed, not of the document."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[_Rec]] = {}
        self._settings = DocumentSettings()
        self._clusters: dict[str, tuple[int, Cluster]] = {}
        self._nodes: dict[str, tuple[int, Node]] = {}
        self._checks: dict[str, tuple[int, HealthCheck]] = {}
        self._specs: dict[str, tuple[int, VipSpec]] = {}
        self._services: dict[str, dict[str, tuple[int, Service]]] = {}
        self._vips: dict[str, Vip] = {}
        self._order: list[str] = []
        self._lists: dict[str, list[Any]] = {"cluster": [], "node": [], "check": []}

    def update(self, chunks: list[str], fetched: dict[str, list[_Rec]]) -> ConfigDocument:
        """The document made of ``chunks`` (digests); ``fetched`` has the records of every digest
        not already held."""
        with gc_paused():
            return self._update(chunks, fetched)

    def _table(self, t: str) -> dict[str, Any]:
        tables: dict[str, dict[str, Any]] = {"cluster": self._clusters, "node": self._nodes, "check": self._checks}
        return tables[t]

    def _update(self, chunks: list[str], fetched: dict[str, list[_Rec]]) -> ConfigDocument:
        wanted = dict.fromkeys(chunks)
        dirty_kinds: set[str] = set()
        dirty_vips: set[str] = set()
        for digest in [d for d in self.chunks if d not in wanted]:
            for r in self.chunks.pop(digest):
                t = r.t  # type: ignore[attr-defined]
                if t == "service":
                    vip = r.vip  # type: ignore[attr-defined]
                    self._services.get(vip, {}).pop(r.k, None)
                    dirty_vips.add(vip)
                elif t == "vip":
                    self._specs.pop(r.k[5:], None)
                    dirty_vips.add(r.k[5:])
                    dirty_kinds.add("vip")
                elif t == "settings":
                    self._settings = DocumentSettings()
                else:
                    self._table(t).pop(r.k, None)
                    dirty_kinds.add(t)
        for digest in wanted:
            if digest in self.chunks:
                continue
            recs = fetched[digest]
            self.chunks[digest] = recs
            for r in recs:
                t = r.t  # type: ignore[attr-defined]
                if t == "service":
                    vip = r.vip  # type: ignore[attr-defined]
                    self._services.setdefault(vip, {})[r.k] = (r.i, r.v)  # type: ignore[attr-defined]
                    dirty_vips.add(vip)
                elif t == "vip":
                    self._specs[r.k[5:]] = (r.i, r.v)  # type: ignore[attr-defined]
                    dirty_vips.add(r.k[5:])
                    dirty_kinds.add("vip")
                elif t == "settings":
                    self._settings = r.v  # type: ignore[attr-defined]
                else:
                    self._table(t)[r.k] = (r.i, r.v)  # type: ignore[attr-defined]
                    dirty_kinds.add(t)
        for t in ("cluster", "node", "check"):
            if t in dirty_kinds:
                self._lists[t] = [o for _, o in sorted(self._table(t).values(), key=lambda x: x[0])]
        if "vip" in dirty_kinds:
            self._order = [a for a, _ in sorted(self._specs.items(), key=lambda x: x[1][0])]
        fields = tuple(VipSpec.model_fields)
        for addr in dirty_vips:
            got = self._specs.get(addr)
            if got is None:
                self._vips.pop(addr, None)
                self._services.pop(addr, None)
                continue
            spec = got[1]
            svcs = [sv for _, sv in sorted(self._services.get(addr, {}).values(), key=lambda x: x[0])]
            values = {f: getattr(spec, f) for f in fields}
            self._vips[addr] = Vip.model_construct(
                _fields_set={*spec.model_fields_set, "services"}, services=svcs, **values
            )
        return ConfigDocument.model_construct(
            _fields_set={"version", "timeouts", "clusters", "nodes", "health_checks", "vips"},
            version=self._settings.version,
            timeouts=self._settings.timeouts,
            clusters=list(self._lists["cluster"]),
            nodes=list(self._lists["node"]),
            health_checks=list(self._lists["check"]),
            vips=[self._vips[a] for a in self._order],
        )
