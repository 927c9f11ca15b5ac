"""Who is calling the ConfigService, and what they may do (docs/config.md, "Authentication and roles").

Credentials: a client certificate verified by gRPC's TLS against ``VGW_CONFIG_TLS_CLIENT_CA`` (the
role is the subject's OU, the identity its CN), or a bearer token whose SHA-256 is listed in
``VGW_CONFIG_TOKENS_FILE`` (re-read when the file changes) or equals the legacy
``VGW_CONFIG_TOKEN`` (role admin, name ``token``). A presented token takes precedence over the
certificate. With no credentials configured at all (allowed on loopback only, or with
``VGW_CONFIG_INSECURE``), every caller is admin and the actor is the client's claim, prefixed
``local:`` (``insecure:`` on a non-loopback address) so the history shows it was not verified.

Roles are ordered: ``reader`` < ``operator`` < ``admin``; each has every power of the one before.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from vgw.config.client import ACTOR_HEADER

from . import metrics

log = logging.getLogger("vgw.config.auth")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
LEGACY_TOKEN_NAME = "token"
LOG_INTERVAL_S = 10.0
"""At most one log line per (reason, identity) in this many seconds; the rest are counted."""


class Role(enum.IntEnum):
    READER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role | None:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            return None


ROLE_NAMES = tuple(r.label for r in Role)

READ_METHODS = frozenset({"Get", "List", "Diff", "History", "Watch"})
WRITE_METHODS = frozenset({"Apply", "Rollback", "SetBackendState", "SetNodeState"})


def required_role(method: str, request: Any = None) -> Role:
    """The least role ``method`` needs: reading (and a dry-run Apply) needs reader, changing
    operator. Unknown methods need admin (nothing is open by omission)."""
    if method in READ_METHODS:
        return Role.READER
    if method == "Apply" and getattr(request, "dry_run", False):
        return Role.READER
    if method in WRITE_METHODS:
        return Role.OPERATOR
    return Role.ADMIN


@dataclass(frozen=True, slots=True)
class Identity:
    kind: Literal["cert", "token", "local", "insecure"]
    name: str
    role: Role | None

    @property
    def actor(self) -> str:
        """What the history and the config.changed event record."""
        return f"{self.kind}:{self.name}"

    @property
    def verified(self) -> bool:
        return self.kind in ("cert", "token")

    @property
    def watch_key(self) -> str:
        """Whose Watch streams count together: a verified identity, or every unverified caller as one."""
        return self.actor if self.verified else self.kind


class AuthFailure(Exception):  # noqa: N818 - an outcome, like ConfigInvalid
    def __init__(self, code: grpc.StatusCode, reason: str, identity: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.identity = identity
        self.message = message


# --- tokens ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenEntry:
    name: str
    role: Role
    sha256: bytes


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str, source: str) -> list[TokenEntry]:
    """``{"tokens": [{"name", "role", "sha256"}]}``; raises ValueError naming the bad entry."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source}: not JSON ({exc})") from None
    items = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError(f'{source}: expected {{"tokens": [{{"name": ..., "role": ..., "sha256": ...}}]}}')
    out: list[TokenEntry] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"{source}: tokens[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object with name, role and sha256")
        name, role, digest = item.get("name"), item.get("role"), item.get("sha256")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{where}: name must match {_NAME.pattern}")
        if name in seen:
            raise ValueError(f"{where}: duplicate name {name!r}")
        seen.add(name)
        r = Role.parse(role) if isinstance(role, str) else None
        if r is None:
            raise ValueError(f"{where} ({name}): role must be one of {', '.join(ROLE_NAMES)}")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ValueError(f"{where} ({name}): sha256 must be 64 hex digits (sha256sum of the token)")
        out.append(TokenEntry(name, r, bytes.fromhex(digest)))
    return out


def load_tokens(path: Path) -> list[TokenEntry]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_tokens(text, str(path))


class TokenFile:
    """The tokens of ``VGW_CONFIG_TOKENS_FILE``, re-read when its mtime, size or inode changes (so
    tokens are added and revoked without a restart). A file that no longer parses accepts no token
    at all until it is fixed (fail closed); the error is logged once per change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._loaded = False
        self.entries: list[TokenEntry] = []
        self.refresh()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self) -> None:
        stamp = self._stat()
        if self._loaded and stamp == self._stamp:
            return
        self._loaded, self._stamp = True, stamp
        try:
            entries = load_tokens(self.path)
        except ValueError as exc:
            log.error("config API tokens: %s; no token is accepted until it is fixed", exc)
            self.entries = []
            return
        log.info("config API tokens: %d loaded from %s", len(entries), self.path, extra={"tokens": len(entries)})
        self.entries = entries


# --- certificates ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def cert_role(pem: bytes) -> tuple[str, Role | None, str]:
    """(CN, role, OUs) of a PEM certificate gRPC has already verified: the role is the one OU
    among reader/operator/admin; none, or several different ones, is no role."""
    cert = x509.load_pem_x509_certificate(pem)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    ous = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    roles = {r for r in (Role.parse(ou) for ou in ous) if r is not None}
    return cn, (roles.pop() if len(roles) == 1 else None), ",".join(ous)


def _first(ctx: Mapping[str, Iterable[bytes]], key: str) -> bytes | None:
    for v in ctx.get(key) or ():
        return v
    return None


def _metadata(md: Iterable[tuple[str, str | bytes]] | None, key: str) -> str | None:
    for k, v in md or ():
        if k == key and isinstance(v, str):
            return v
    return None


# --- the authenticator ----------------------------------------------------------------------------


class Authenticator:
    def __init__(
        self,
        *,
        mtls: bool = False,
        tokens_file: Path | None = None,
        legacy_token: str | None = None,
        loopback: bool = True,
    ) -> None:
        self.mtls = mtls
        self.tokens = TokenFile(tokens_file) if tokens_file is not None else None
        self.legacy = token_digest(legacy_token) if legacy_token else None
        self.loopback = loopback
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}

    @property
    def enabled(self) -> bool:
        return self.mtls or self.tokens is not None or self.legacy is not None

    @property
    def tokens_enabled(self) -> bool:
        return self.tokens is not None or self.legacy is not None

    def _token(self, token: str) -> TokenEntry | None:
        digest = token_digest(token)
        found: TokenEntry | None = None
        if self.tokens is not None:
            self.tokens.refresh()
            for e in self.tokens.entries:  # every entry compared: the time does not tell which matched
                if hmac.compare_digest(digest, e.sha256) and found is None:
                    found = e
        if self.legacy is not None and hmac.compare_digest(digest, self.legacy) and found is None:
            found = TokenEntry(LEGACY_TOKEN_NAME, Role.ADMIN, self.legacy)
        return found

    def authenticate(
        self, metadata: Iterable[tuple[str, str | bytes]] | None, auth_context: Mapping[str, Iterable[bytes]]
    ) -> Identity:
        if not self.enabled:
            claimed = (_metadata(metadata, ACTOR_HEADER) or "").strip()[:200] or "anonymous"
            return Identity("local" if self.loopback else "insecure", claimed, Role.ADMIN)
        auth = _metadata(metadata, "authorization")
        if auth is not None and self.tokens_enabled:
            scheme, _, given = auth.strip().partition(" ")
            entry = self._token(given.strip()) if scheme.lower() == "bearer" and given.strip() else None
            if entry is None:
                raise AuthFailure(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "bad_token",
                    "anonymous",
                    "the bearer token is not valid (unknown, revoked, or not 'Bearer <token>')",
                )
            return Identity("token", entry.name, entry.role)
        if self.mtls:
            pem = _first(auth_context, "x509_pem_cert")
            if pem is not None:
                cn, role, _ = cert_role(pem)
                if cn:
                    return Identity("cert", cn[:200], role)
        wanted = " or ".join(
            w for w, on in (("a client certificate", self.mtls), ("a bearer token", self.tokens_enabled)) if on
        )
        raise AuthFailure(
            grpc.StatusCode.UNAUTHENTICATED, "unauthenticated", "anonymous", f"this call needs credentials: {wanted}"
        )

    @staticmethod
    def authorize(identity: Identity, method: str, request: Any = None) -> None:
        need = required_role(method, request)
        if identity.role is None:
            raise AuthFailure(
                grpc.StatusCode.PERMISSION_DENIED,
                "no_role",
                identity.actor,
                f"{identity.actor} has no config API role (a certificate's OU or a token's role must be one of "
                f"{', '.join(ROLE_NAMES)}); {method} needs role {need.label}",
            )
        if identity.role < need:
            raise AuthFailure(
                grpc.StatusCode.PERMISSION_DENIED,
                "permission_denied",
                identity.actor,
                f"{method}{' (not a dry run)' if method == 'Apply' else ''} needs role {need.label} or higher; "
                f"{identity.actor} has role {identity.role.label}",
            )

    def record(self, failure: AuthFailure, method: str, peer: str) -> None:
        """Count a failure and log it (at most one line per reason and identity per LOG_INTERVAL_S)."""
        metrics.AUTH_FAILURES.labels(failure.reason, failure.identity).inc()
        key = (failure.reason, failure.identity)
        now = time.monotonic()
        last, suppressed = self._logged.get(key, (0.0, 0))
        if last and now - last < LOG_INTERVAL_S:
            self._logged[key] = (last, suppressed + 1)
            return
        if len(self._logged) > 1000:
            self._logged.clear()
        self._logged[key] = (now, 0)
        log.warning(
            "config API %s: %s (%s from %s)%s",
            failure.reason,
            failure.message,
            method,
            peer,
            f"; {suppressed} more like it not logged" if suppressed else "",
            extra={
                "auth_failure": failure.reason,
                "identity": failure.identity,
                "method": method,
                "peer": peer,
                "suppressed": suppressed,
            },
        )
