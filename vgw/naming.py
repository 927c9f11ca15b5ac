"""Encoding of identifiers into NATS subject tokens and JetStream KV keys.

Subject tokens split on ``.`` and KV keys reject ``:``, so addresses are encoded the same way for
both: IPv4 dots become ``-`` and IPv6 colons become ``-`` too. The two never collide because an IPv4
token has exactly four decimal groups while an IPv6 token never does (it has eight groups or a
``--`` run). A port is appended after ``_``.
"""

from __future__ import annotations

import ipaddress
import re

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class TokenError(ValueError):
    """An identifier cannot be used as a subject token or KV key."""


def check_name(name: str) -> str:
    """Validate an operator-chosen identifier (node, service, VIP name) used as a token."""
    if not _NAME_RE.fullmatch(name):
        raise TokenError(
            f"{name!r} is not a valid name: use 1-63 characters from A-Z a-z 0-9 _ -, starting with a letter or digit"
        )
    return name


IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def addr_token(addr: str | IP) -> str:
    """Encode an IPv4 or IPv6 address as a token (``198.51.100.7`` -> ``198-51-100-7``)."""
    if isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
        ip: IP = addr  # already parsed: events carry address objects, and parsing is the slow part
    else:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError as exc:
            raise TokenError(f"{addr!r} is not an IP address") from exc
    if ip.version == 4:
        return str(ip).replace(".", "-")
    return ip.compressed.replace(":", "-")


def token_addr(token: str) -> str:
    """Decode :func:`addr_token`."""
    parts = token.split("-")
    candidate = ".".join(parts) if len(parts) == 4 and all(p.isdigit() for p in parts) else token.replace("-", ":")
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError as exc:
        raise TokenError(f"{token!r} is not an encoded address") from exc


def endpoint_token(addr: str | IP, port: int) -> str:
    """Encode ``addr:port`` (``198.51.100.7``, 80 -> ``198-51-100-7_80``)."""
    if not 0 <= port <= 65535:
        raise TokenError(f"port {port} out of range 0-65535")
    return f"{addr_token(addr)}_{port}"


def token_endpoint(token: str) -> tuple[str, int]:
    """Decode :func:`endpoint_token`."""
    addr, sep, port = token.rpartition("_")
    if not sep or not port.isdigit():
        raise TokenError(f"{token!r} is not an encoded endpoint")
    return token_addr(addr), int(port)
