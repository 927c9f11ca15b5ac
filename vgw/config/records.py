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


class EncodedDoc(dict[str, Encoded]):
    """Records of a document by key, with what an incremental encode of the next document needs:
    the records of each VIP object (by identity), every object's record (by identity), and, when
    derived from a base, which keys were encoded anew or removed."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.vips: dict[int, tuple[BaseModel, int, tuple[str, ...]]] = {}
        self.objs: dict[int, Encoded] = {}
        self.other_keys: set[str] = set()
        self.total_bytes = 0
        self.base: EncodedDoc | None = None
        self.fresh: list[str] = []
        self.removed: list[str] = []

    def changed_since(self, base: dict[str, Encoded]) -> list[str] | None:
        """Keys that may differ from ``base`` when this was derived from it, else None."""
        if self.base is not None and self.base is base:
            return [*self.fresh, *self.removed]
        return None


def _encode_one(kind: str, key: str, index: int, obj: BaseModel, vip: str | None) -> Encoded:
    js = obj.model_dump_json(exclude={"services"} if kind == "vip" else None)
    kq = json.dumps(key)
    vip_part = f',"vip":"{vip}"' if vip is not None else ""
    line = f'{{"t":"{kind}","k":{kq},"i":{index}{vip_part},"v":{js}}}'
    return Encoded(key=key, kind=kind, index=index, value_json=js, line=line, obj=obj, vip=vip)


class RecordEncoder:
    """Encodes documents into records. Given the records of a previous document (``base``),
    objects that are the same objects at the same position reuse their records, and a VIP object
    that did not change is skipped with all its services: a small edit of a document derived from
    the base (``model_copy`` along the changed path) costs about what it replaced, not the
    document. Documents are treated as immutable (never mutate their lists in place)."""

    def encode(self, doc: ConfigDocument, base: dict[str, Encoded] | None = None) -> EncodedDoc:
        with gc_paused():
            if isinstance(base, EncodedDoc):
                return self._incremental(doc, base)
            return self._incremental(doc, EncodedDoc())

    @staticmethod
    def _incremental(doc: ConfigDocument, base: EncodedDoc) -> EncodedDoc:  # noqa: PLR0915 - one pass, kept together
        out = EncodedDoc(base)
        out.base = base
        objs = dict(base.objs)
        fresh: list[str] = []
        total = base.total_bytes
        replaced: list[Encoded] = []

        def put(kind: str, key: str, index: int, obj: BaseModel, vip: str | None = None) -> None:
            nonlocal total
            hit = objs.get(id(obj))
            if hit is not None and hit.obj is obj and hit.index == index and hit.vip == vip and hit.key == key:
                enc = hit
            else:
                enc = _encode_one(kind, key, index, obj, vip)
                objs[id(obj)] = enc
                fresh.append(key)
            prev = out.get(key)
            if prev is not enc:
                if prev is not None:
                    total -= len(prev.line) + 1
                    replaced.append(prev)
                total += len(enc.line) + 1
                out[key] = enc

        settings = DocumentSettings(version=doc.version, timeouts=doc.timeouts)
        prev_settings = base.get("settings")
        if prev_settings is None or prev_settings.value_json != settings.model_dump_json():
            put("settings", "settings", 0, settings)
        other: set[str] = {"settings"}
        for i, c in enumerate(doc.clusters):
            put("cluster", f"clusters/{c.name}", i, c)
            other.add(f"clusters/{c.name}")
        for i, n in enumerate(doc.nodes):
            put("node", f"nodes/{n.id}", i, n)
            other.add(f"nodes/{n.id}")
        for i, h in enumerate(doc.health_checks):
            put("check", f"health_checks/{h.name}", i, h)
            other.add(f"health_checks/{h.name}")
        gone = [k for k in base.other_keys if k not in other]

        vips: dict[int, tuple[BaseModel, int, tuple[str, ...]]] = {}
        new_keys: set[str] = set()
        for i, v in enumerate(doc.vips):
            st = base.vips.get(id(v))
            if st is not None and st[0] is v and st[1] == i:
                vips[id(v)] = st
                continue
            addr = str(v.address)
            keys = [f"vips/{addr}"]
            put("vip", keys[0], i, v)
            for j, svc in enumerate(v.services):
                k = f"services/{svc.name}"
                put("service", k, j, svc, vip=addr)
                keys.append(k)
            vips[id(v)] = (v, i, tuple(keys))
            new_keys.update(keys)
        for vid, st in base.vips.items():
            if vips.get(vid) is not st:
                gone.extend(k for k in st[2] if k not in new_keys)
        removed: list[str] = []
        for k in gone:
            enc = out.pop(k, None)
            if enc is not None:
                total -= len(enc.line) + 1
                replaced.append(enc)
                removed.append(k)
        for enc in replaced:  # forget objects no longer in the document
            if objs.get(id(enc.obj)) is enc and out.get(enc.key) is not enc:
                del objs[id(enc.obj)]
        out.vips = vips
        out.objs = objs
        out.other_keys = other
        out.total_bytes = total
        out.fresh = fresh
        out.removed = removed
        return out


def _same_record(old: tuple[int, BaseModel], new: tuple[int, BaseModel]) -> bool:
    """Same place, same values and the same fields given (what a dump without defaults shows)."""
    return old[0] == new[0] and old[1] == new[1] and old[1].model_fields_set == new[1].model_fields_set


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
        # A chunk holds the records of many services (sharded by key): when one changes, the others
        # come back re-decoded but equal. Those keep their old objects and leave their VIP untouched,
        # so what follows the document (the VIP objects, a follower's re-check) sees only the change.
        gone: dict[tuple[str, str], tuple[int, Any]] = {}
        for digest in [d for d in self.chunks if d not in wanted]:
            self._drop(self.chunks.pop(digest), gone, dirty_kinds, dirty_vips)
        for digest in wanted:
            if digest not in self.chunks:
                self.chunks[digest] = fetched[digest]
                self._take(fetched[digest], gone, dirty_kinds, dirty_vips)
        for vip, k in gone:  # removed, not re-added
            dirty_vips.add(vip or k)
            if not vip:
                dirty_kinds.add("vip")
        return self._rebuild(dirty_kinds, dirty_vips)

    def _drop(
        self, recs: list[_Rec], gone: dict[tuple[str, str], tuple[int, Any]], kinds: set[str], vips: set[str]
    ) -> None:
        for r in recs:
            t = r.t  # type: ignore[attr-defined]
            if t == "service":
                vip = r.vip  # type: ignore[attr-defined]
                old = self._services.get(vip, {}).pop(r.k, None)
                if old is not None:
                    gone[(vip, r.k)] = old
                else:
                    vips.add(vip)
            elif t == "vip":
                spec = self._specs.pop(r.k[5:], None)
                if spec is not None:
                    gone[("", r.k[5:])] = spec
                else:
                    vips.add(r.k[5:])
                    kinds.add("vip")
            elif t == "settings":
                self._settings = DocumentSettings()
            else:
                self._table(t).pop(r.k, None)
                kinds.add(t)

    def _take(
        self, recs: list[_Rec], gone: dict[tuple[str, str], tuple[int, Any]], kinds: set[str], vips: set[str]
    ) -> None:
        for r in recs:
            t = r.t  # type: ignore[attr-defined]
            if t == "service":
                vip = r.vip  # type: ignore[attr-defined]
                new = (r.i, r.v)  # type: ignore[attr-defined]
                old = gone.pop((vip, r.k), None)
                if old is not None and _same_record(old, new):
                    self._services.setdefault(vip, {})[r.k] = old
                else:
                    self._services.setdefault(vip, {})[r.k] = new
                    vips.add(vip)
            elif t == "vip":
                addr, spec = r.k[5:], (r.i, r.v)  # type: ignore[attr-defined]
                old_spec = gone.pop(("", addr), None)
                if old_spec is not None and _same_record(old_spec, spec):
                    self._specs[addr] = old_spec
                else:
                    self._specs[addr] = spec
                    vips.add(addr)
                    kinds.add("vip")
            elif t == "settings":
                self._settings = r.v  # type: ignore[attr-defined]
            else:
                self._table(t)[r.k] = (r.i, r.v)  # type: ignore[attr-defined]
                kinds.add(t)

    def _rebuild(self, dirty_kinds: set[str], dirty_vips: set[str]) -> ConfigDocument:
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
