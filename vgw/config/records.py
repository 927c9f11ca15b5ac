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

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .model import SCHEMA_VERSION, Cluster, ConfigDocument, HealthCheck, Node, Service, Timeouts, Vip, VipSpec
from .types import IPAddress


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
    vip: IPAddress
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


class RecordEncoder:
    def __init__(self) -> None:
        self._cache: dict[int, tuple[BaseModel, str]] = {}

    def _json(self, obj: BaseModel, cache: dict[int, tuple[BaseModel, str]], exclude: set[str] | None = None) -> str:
        hit = self._cache.get(id(obj))
        js = hit[1] if hit is not None and hit[0] is obj else obj.model_dump_json(exclude=exclude)
        cache[id(obj)] = (obj, js)
        return js

    def encode(self, doc: ConfigDocument) -> dict[str, Encoded]:
        cache: dict[int, tuple[BaseModel, str]] = {}
        out: dict[str, Encoded] = {}

        def add(kind: str, key: str, index: int, obj: BaseModel, js: str, vip: str | None = None) -> None:
            kq = json.dumps(key)
            vip_part = f',"vip":"{vip}"' if vip is not None else ""
            line = f'{{"t":"{kind}","k":{kq},"i":{index}{vip_part},"v":{js}}}'
            out[key] = Encoded(key=key, kind=kind, index=index, value_json=js, line=line, obj=obj, vip=vip)

        settings = DocumentSettings(version=doc.version, timeouts=doc.timeouts)
        add("settings", "settings", 0, settings, settings.model_dump_json())
        for i, c in enumerate(doc.clusters):
            add("cluster", f"clusters/{c.name}", i, c, self._json(c, cache))
        for i, n in enumerate(doc.nodes):
            add("node", f"nodes/{n.id}", i, n, self._json(n, cache))
        for i, h in enumerate(doc.health_checks):
            add("check", f"health_checks/{h.name}", i, h, self._json(h, cache))
        for i, v in enumerate(doc.vips):
            addr = str(v.address)
            add("vip", f"vips/{addr}", i, v, self._json(v, cache, exclude={"services"}))
            for j, s in enumerate(v.services):
                add("service", f"services/{s.name}", j, s, self._json(s, cache), vip=addr)
        self._cache = cache
        return out


def decode_chunk(data: bytes) -> list[_Rec]:
    """The records of one chunk (a JSON array of record lines)."""
    return list(RECORDS.validate_json(data))


def assemble(records: Iterable[_Rec]) -> ConfigDocument:
    """Build the document from its records without validating again (records were validated when
    decoded, and the whole document when it was applied)."""
    settings = DocumentSettings()
    clusters: list[tuple[int, Cluster]] = []
    nodes: list[tuple[int, Node]] = []
    checks: list[tuple[int, HealthCheck]] = []
    vips: list[tuple[int, VipSpec]] = []
    services: dict[str, list[tuple[int, Service]]] = {}
    for r in records:
        if isinstance(r, ServiceRec):
            services.setdefault(str(r.vip), []).append((r.i, r.v))
        elif isinstance(r, VipRec):
            vips.append((r.i, r.v))
        elif isinstance(r, NodeRec):
            nodes.append((r.i, r.v))
        elif isinstance(r, CheckRec):
            checks.append((r.i, r.v))
        elif isinstance(r, ClusterRec):
            clusters.append((r.i, r.v))
        elif isinstance(r, SettingsRec):
            settings = r.v
    vip_objs = []
    fields = list(VipSpec.model_fields)
    for _, spec in sorted(vips, key=lambda t: t[0]):
        svcs = [s for _, s in sorted(services.get(str(spec.address), []), key=lambda t: t[0])]
        values = {f: getattr(spec, f) for f in fields}
        vip_objs.append(Vip.model_construct(_fields_set={*spec.model_fields_set, "services"}, services=svcs, **values))
    return ConfigDocument.model_construct(
        _fields_set={"version", "timeouts", "clusters", "nodes", "health_checks", "vips"},
        version=settings.version,
        timeouts=settings.timeouts,
        clusters=[c for _, c in sorted(clusters, key=lambda t: t[0])],
        nodes=[n for _, n in sorted(nodes, key=lambda t: t[0])],
        health_checks=[h for _, h in sorted(checks, key=lambda t: t[0])],
        vips=vip_objs,
    )
