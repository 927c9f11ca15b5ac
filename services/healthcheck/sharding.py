"""Which instance probes which (backend, check): rendezvous (highest-random-weight) hashing over
the live members. Adding or removing a member moves only the keys it wins or held, and every
member computes the same owner without talking to the others."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _score(member: str, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{member}\x00{key}".encode(), digest_size=8).digest(), "big")


def owner(key: str, members: Iterable[str]) -> str | None:
    best: tuple[int, str] | None = None
    for m in members:
        s = (_score(m, key), m)
        if best is None or s > best:
            best = s
    return None if best is None else best[1]


def owned(keys: Iterable[str], members: Iterable[str], me: str) -> set[str]:
    live = sorted(set(members) | {me})
    return {k for k in keys if owner(k, live) == me}
