"""Secrets in configuration documents (BGP TCP-MD5 passwords) never leave the config service.

Every read (Get, List, Diff, History, Watch, Apply responses) shows :data:`MASK` in their place. A
document sent back with the mask where a password is stored keeps the stored password, so
``vgwctl get config > f; edit f; vgwctl apply -f f`` round-trips; the mask where nothing is stored
is refused (INVALID_ARGUMENT, naming the path). A real password equal to the mask cannot be set.
"""

from __future__ import annotations

from typing import Any

from vgw.config.model import BgpPeer, ConfigDocument, Node
from vgw.config.validate import SECRET_FIELDS, ConfigInvalid, Issue

MASK = "********"
MASK_CHANGED = "******** (changed)"
USER_MAPS = frozenset({"headers"})
"""SECRET_FIELDS are secret wherever they appear in a dumped object, except inside these (maps whose
keys the user names, e.g. a health check's HTTP headers)."""


def mask_value(value: Any) -> Any:
    """A copy of a JSON value with every secret field's value replaced by the mask."""
    if isinstance(value, dict):
        return {
            k: v if k in USER_MAPS else (MASK if k in SECRET_FIELDS and v else mask_value(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_value(v) for v in value]
    return value


def mask_pair(old: Any, new: Any) -> tuple[Any, Any]:
    """Both sides of a change, masked; a secret that differs shows as :data:`MASK_CHANGED` on the
    new side, so a diff still says it changed (peers in lists are paired by position)."""
    if isinstance(old, dict) and isinstance(new, dict):
        o: dict[str, Any] = {}
        n: dict[str, Any] = {}
        for k in old.keys() | new.keys():
            ov, nv = old.get(k), new.get(k)
            if k in USER_MAPS:
                if k in old:
                    o[k] = ov
                if k in new:
                    n[k] = nv
            elif k in SECRET_FIELDS:
                if k in old:
                    o[k] = MASK if ov else ov
                if k in new:
                    n[k] = (MASK_CHANGED if ov and nv != ov else MASK) if nv else nv
            elif k in old and k in new:
                o[k], n[k] = mask_pair(ov, nv)
            elif k in old:
                o[k] = mask_value(ov)
            else:
                n[k] = mask_value(nv)
        return {k: o[k] for k in old if k in o}, {k: n[k] for k in new if k in n}
    if isinstance(old, list) and isinstance(new, list):
        pairs = [mask_pair(a, b) for a, b in zip(old, new, strict=False)]
        om = [a for a, _ in pairs] + [mask_value(v) for v in old[len(pairs) :]]
        nm = [b for _, b in pairs] + [mask_value(v) for v in new[len(pairs) :]]
        return om, nm
    return mask_value(old), mask_value(new)


def mask_field(field: str, old: Any, new: Any) -> tuple[Any, Any]:
    """A diff's field change (``bgp.peers``, ``bgp.peers.password``...), masked."""
    parts = field.split(".")
    if any(p in USER_MAPS for p in parts):
        return old, new
    if parts[-1] in SECRET_FIELDS:
        return (MASK if old else old), ((MASK_CHANGED if old and new != old else MASK) if new else new)
    return mask_pair(old, new)


def unmask(doc: ConfigDocument, stored: ConfigDocument | None) -> ConfigDocument:
    """``doc`` with each masked password replaced by the one stored for the same node and peer
    address; raises :class:`ConfigInvalid` for a mask with nothing stored behind it."""
    known: dict[tuple[str, str], str] = {}
    if stored is not None:
        for n in stored.nodes:
            if n.bgp is not None:
                for p in n.bgp.peers:
                    if p.password:
                        known[(n.id, str(p.address))] = p.password
    issues: list[Issue] = []
    nodes: list[Node] | None = None
    for i, node in enumerate(doc.nodes):
        if node.bgp is None:
            continue
        peers: list[BgpPeer] | None = None
        for j, peer in enumerate(node.bgp.peers):
            if peer.password != MASK:
                continue
            real = known.get((node.id, str(peer.address)))
            if real is None:
                issues.append(
                    Issue(
                        f"nodes[{i}].bgp.peers[{j}].password",
                        f"is the mask {MASK!r} but no password is stored for node {node.id} peer {peer.address}: "
                        "give the password itself (the mask only keeps a stored one)",
                    )
                )
                continue
            if peers is None:
                peers = list(node.bgp.peers)
            peers[j] = peer.model_copy(update={"password": real})
        if peers is not None:
            if nodes is None:
                nodes = list(doc.nodes)
            nodes[i] = node.model_copy(update={"bgp": node.bgp.model_copy(update={"peers": peers})})
    if issues:
        raise ConfigInvalid(issues)
    return doc if nodes is None else doc.model_copy(update={"nodes": nodes})


def has_mask(doc: ConfigDocument) -> bool:
    return any(p.password == MASK for n in doc.nodes if n.bgp is not None for p in n.bgp.peers)
