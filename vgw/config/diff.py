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
from .records import Encoded, RecordEncoder, gc_paused

Op = Literal["added", "removed", "modified"]
MAX_FIELD_CHANGES = 50
MAX_DETAILED = 2000


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


class _Budget:
    """Field-level detail costs a dump of both objects; past ``left`` entries only paths are kept."""

    def __init__(self, left: int) -> None:
        self.left = left

    def take(self) -> bool:
        self.left -= 1
        return self.left >= 0


def _service_diff(path: str, old: Service, new: Service, entries: list[DiffEntry], budget: _Budget) -> None:
    if budget.take():
        changes = field_changes(_dump(old, {"backends"}), _dump(new, {"backends"}))
        if changes:
            entries.append(DiffEntry("modified", path, changes[:MAX_FIELD_CHANGES]))
    elif old.model_dump_json(exclude={"backends"}) != new.model_dump_json(exclude={"backends"}):
        entries.append(DiffEntry("modified", path))
    if old.backends == new.backends:
        return
    ob = {(b.address.packed, b.port): b for b in old.backends}
    nb = {(b.address.packed, b.port): b for b in new.backends}
    for k, b in ob.items():
        n = nb.get(k)
        if n is None:
            entries.append(DiffEntry("removed", f"{path}/backends/{b.key}"))
        elif n is not b and (n.weight != b.weight or n.state != b.state):  # all non-key fields (tested)
            ch = field_changes(_dump(b), _dump(n)) if budget.take() else []
            entries.append(DiffEntry("modified", f"{path}/backends/{b.key}", ch))
    for k, n in nb.items():
        if k not in ob:
            entries.append(DiffEntry("added", f"{path}/backends/{n.key}"))


def diff_records(
    old: dict[str, Encoded], new: dict[str, Encoded], detail: int = MAX_DETAILED, keys: list[str] | None = None
) -> Diff:
    """Differences between two encoded documents; field-level detail for the first ``detail``
    modified objects (the paths and counts are always complete). ``keys``, when given, are the
    only keys that may differ (an incremental encode knows them)."""
    with gc_paused():
        return _diff_records(old, new, _Budget(detail), keys)


def _diff_records(old: dict[str, Encoded], new: dict[str, Encoded], budget: _Budget, keys: list[str] | None) -> Diff:
    entries: list[DiffEntry] = []
    if keys is not None:
        candidates = dict.fromkeys(keys)
        old_items = [(k, old[k]) for k in candidates if k in old]
        added = [k for k in candidates if k in new and k not in old]
    else:
        old_items = list(old.items())
        added = [k for k in new if k not in old]
    for key, o in old_items:
        n = new.get(key)
        if n is None:
            entries.append(DiffEntry("removed", key))
            continue
        if n is o or (n.value_json == o.value_json and n.vip == o.vip):
            continue
        if o.kind == "service" and isinstance(o.obj, Service) and isinstance(n.obj, Service):
            if n.vip != o.vip:
                entries.append(DiffEntry("modified", key, [FieldChange("vip", o.vip, n.vip)]))
            _service_diff(key, o.obj, n.obj, entries, budget)
            continue
        ex = {"services"} if o.kind == "vip" else None
        if budget.take():
            changes = field_changes(_dump(o.obj, ex), _dump(n.obj, ex))
            if changes:
                entries.append(DiffEntry("modified", key, changes[:MAX_FIELD_CHANGES]))
        else:
            entries.append(DiffEntry("modified", key))
    entries.extend(DiffEntry("added", key) for key in added)
    return Diff(entries)


def diff_documents(old: ConfigDocument | None, new: ConfigDocument) -> Diff:
    """What changes from ``old`` (None = empty store) to ``new``."""
    return diff_records(RecordEncoder().encode(old) if old is not None else {}, RecordEncoder().encode(new))
