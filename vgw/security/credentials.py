"""Per-identity secrets other than keys and certificates: NATS nkey seeds and config API tokens."""

from __future__ import annotations

import hashlib
import os
import re
import secrets

import nkeys

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32,256}$")


def new_seed() -> bytes:
    """A NATS user seed (``SU...``). Written without a trailing newline: nats-py reads the whole
    file as the seed."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed


def public_nkey(seed: bytes) -> str | None:
    """The user's public nkey (``U...``), or None if ``seed`` is not a valid user seed."""
    try:
        kp = nkeys.from_seed(bytearray(seed))
        public = kp.public_key
    except (nkeys.NkeysError, ValueError, TypeError):
        return None
    text = bytes(public).decode()
    return text if text.startswith("U") else None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_ok(raw: bytes) -> str | None:
    """The token in a token file, or None if it is not one we would have issued."""
    try:
        token = raw.decode().strip()
    except UnicodeDecodeError:
        return None
    return token if _TOKEN_RE.fullmatch(token) else None


def token_hash(token: str) -> str:
    """What the config API stores: the hex SHA-256 of the token (the file's text, stripped)."""
    return hashlib.sha256(token.encode()).hexdigest()
