"""Differences between two documents, object by object.

Paths name objects the way events and the store do: ``nodes/node-a``, ``vips/203.0.113.10``,
``services/www-http``, ``services/www-http/backends/198.51.100.21:8080``, ``settings``. A
modified object lists its changed fields (``weight: 100 -> 50``). Order within lists is not a
change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from .model import ConfigDocument, Service
from .records import Encoded, RecordEncoder

Op = Literal["added", "removed", "modified"]
MAX_FIELD_CHANGES = 50


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.field}: {_show(self.old)} -> {_show(self.new)}"


@dataclass(frozen=True, slots=True)
class DiffEntry:
    op: Op
    path: str
    changes: list[FieldChange] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "path": self.path}
        if self.changes:
            out["changes"] = [{"field": c.field, "old": c.old, "new": c.new} for c in self.changes]
        return out


@dataclass(frozen=True, slots=True)
class Diff:
    entries: list[DiffEntry]

    @property
    def empty(self) -> bool:
        return not self.entries

    def counts(self) -> dict[str, int]:
        out = {"added": 0, "removed": 0, "modified": 0}
        for e in self.entries:
            out[e.op] += 1
        return out

    def paths(self) -> list[str]:
        return [e.path for e in self.entries]

    def to_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.entries]


def _show(v: Any) -> str:
    if v is None:
        return "(none)"
    s = json.dumps(v, separators=(",", ":"))
    return s if len(s) <= 80 else s[:77] + "..."


def field_changes(old: Any, new: Any, prefix: str = "") -> list[FieldChange]:
    """Changed leaves between two JSON values (dicts compared by key, lists as a whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[FieldChange] = []
        for k in sorted(set(old) | set(new), key=lambda x: (list(old).index(x) if x in old else 1_000, x)):
            p = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append(FieldChange(p, None, new[k]))
            elif k not in new:
                out.append(FieldChange(p, old[k], None))
            elif old[k] != new[k]:
                out.extend(field_changes(old[k], new[k], p))
        return out
    return [] if old == new else [FieldChange(prefix or "(value)", old, new)]


def _dump(obj: BaseModel, exclude: set[str] | None = None) -> Any:
    return obj.model_dump(mode="json", exclude=exclude)


def _service_diff(path: str, old: Service, new: Service, entries: list[DiffEntry]) -> None:
    changes = field_changes(_dump(old, {"backends"}), _dump(new, {"backends"}))
    if changes:
        entries.append(DiffEntry("modified", path, changes[:MAX_FIELD_CHANGES]))
    ob = {b.key: b for b in old.backends}
    nb = {b.key: b for b in new.backends}
    for key, b in ob.items():
        if key not in nb:
            entries.append(DiffEntry("removed", f"{path}/backends/{key}"))
        elif nb[key] != b:
            ch = field_changes(_dump(b), _dump(nb[key]))
            entries.append(DiffEntry("modified", f"{path}/backends/{key}", ch))
    for key in nb:
        if key not in ob:
            entries.append(DiffEntry("added", f"{path}/backends/{key}"))


def diff_records(old: dict[str, Encoded], new: dict[str, Encoded]) -> Diff:
    entries: list[DiffEntry] = []
    for key, o in old.items():
        n = new.get(key)
        if n is None:
            entries.append(DiffEntry("removed", key))
            continue
        if n.value_json == o.value_json and n.vip == o.vip:
            continue
        if o.kind == "service" and isinstance(o.obj, Service) and isinstance(n.obj, Service):
            if n.vip != o.vip:
                entries.append(DiffEntry("modified", key, [FieldChange("vip", o.vip, n.vip)]))
            _service_diff(key, o.obj, n.obj, entries)
            continue
        ex = {"services"} if o.kind == "vip" else None
        changes = field_changes(_dump(o.obj, ex), _dump(n.obj, ex))
        if changes:
            entries.append(DiffEntry("modified", key, changes[:MAX_FIELD_CHANGES]))
    for key in new:
        if key not in old:
            entries.append(DiffEntry("added", key))
    return Diff(entries)


def diff_documents(old: ConfigDocument | None, new: ConfigDocument) -> Diff:
    """What changes from ``old`` (None = empty store) to ``new``."""
    return diff_records(RecordEncoder().encode(old) if old is not None else {}, RecordEncoder().encode(new))
