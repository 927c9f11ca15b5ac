"""Value types of the configuration model: addresses, networks, durations, names, communities.

Each type validates strings as operators write them in YAML and serialises back to the same
readable form, so a document survives a store round trip unchanged. Errors are plain sentences
(pydantic's ``PydanticCustomError``) that name what was wrong, without pydantic's type jargon.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, PlainSerializer, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from vgw.duration import parse_duration
from vgw.naming import TokenError, check_name

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _err(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def _need_str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise _err("type_error", f"expected {what} as a string, got {type(v).__name__}")
    return v


_IP_CACHE: dict[str, IP] = {}
_IP_CACHE_MAX = 1 << 18


def _parse_ip(v: Any) -> IP:
    if isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return v
    s = _need_str(v, "an IP address")
    ip = _IP_CACHE.get(s)  # addresses are immutable: documents with 100k backends repeat them
    if ip is not None:
        return ip
    try:
        ip = ipaddress.ip_address(s)
    except ValueError:
        raise _err("ip_address", f"{s!r} is not an IPv4 or IPv6 address") from None
    if len(_IP_CACHE) >= _IP_CACHE_MAX:
        _IP_CACHE.clear()
    _IP_CACHE[s] = ip
    return ip


def _parse_ipv4(v: Any) -> ipaddress.IPv4Address:
    ip = _parse_ip(v)
    if not isinstance(ip, ipaddress.IPv4Address):
        raise _err("ipv4_address", f"{v!r} is not an IPv4 address")
    return ip


def _parse_network(v: Any) -> Network:
    if isinstance(v, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return v
    s = _need_str(v, "a CIDR prefix")
    try:
        return ipaddress.ip_network(s, strict=True)
    except ValueError as exc:
        raise _err("ip_network", f"{s!r} is not a CIDR prefix ({exc})") from None


def _parse_interface(v: Any) -> Interface:
    if isinstance(v, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return v
    s = _need_str(v, "an address with prefix length")
    if "/" not in s:
        raise _err("ip_interface", f"{s!r} needs a prefix length, e.g. 192.0.2.10/24")
    try:
        return ipaddress.ip_interface(s)
    except ValueError as exc:
        raise _err("ip_interface", f"{s!r} is not an address with prefix length ({exc})") from None


def _parse_lip_entry(v: Any) -> Network:
    """A LIP pool entry: one address (``198.18.0.1``) or a prefix (``198.18.0.0/28``)."""
    s = _need_str(v, "an address or CIDR prefix")
    try:
        return ipaddress.ip_network(s, strict=True)
    except ValueError as exc:
        raise _err("lip_entry", f"{s!r} is not an address or CIDR prefix ({exc})") from None


def _parse_duration(v: Any) -> float:
    if isinstance(v, bool):
        raise _err("duration", "expected a duration such as 2s or 250ms, got a boolean")
    if isinstance(v, int | float):
        value = float(v)
        if value < 0 or not math.isfinite(value):
            raise _err("duration", f"{v!r} is not a finite, non-negative duration")
        return value
    s = _need_str(v, "a duration (e.g. 2s, 250ms)")
    try:
        return parse_duration(s)
    except ValueError as exc:
        raise _err("duration", str(exc)) from None


def _check_name(v: str) -> str:
    try:
        return check_name(v)
    except TokenError as exc:
        raise _err("name", str(exc)) from None


_COMMUNITY = re.compile(r"^(\d{1,5}):(\d{1,5})$")


def _check_community(v: Any) -> str:
    s = _need_str(v, "a BGP community ASN:VALUE")
    m = _COMMUNITY.fullmatch(s)
    if not m or int(m.group(1)) > 65535 or int(m.group(2)) > 65535:
        raise _err("community", f"{s!r} is not a BGP community ASN:VALUE with both parts in 0-65535")
    return s


_STATUS = re.compile(r"^([1-5]\d\d)(?:-([1-5]\d\d))?$")


def _check_status_range(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    s = _need_str(v, "an HTTP status or range such as 200-399")
    m = _STATUS.fullmatch(s)
    if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
        raise _err("status_range", f"{s!r} is not an HTTP status (100-599) or range LOW-HIGH such as 200-399")
    return s


_PERCENT = re.compile(r"^(\d{1,3}(?:\.\d+)?)%$")


def _check_watermark(v: Any) -> int | str:
    """A healthy-backend threshold: a count (``2``) or a share of the backends (``50%``)."""
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 0 or v > 1_000_000:
            raise _err("watermark", f"{v} is not a count of backends (0-1000000)")
        return v
    s = _need_str(v, "a backend count or a percentage such as 50%")
    m = _PERCENT.fullmatch(s.strip())
    if not m or float(m.group(1)) > 100:
        raise _err("watermark", f"{s!r} is not a backend count or a percentage 0%-100%")
    return s.strip()


_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_FRACTION = re.compile(r"^[0-9]*\.[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
QUANTITY_UNITS: dict[str, int] = {
    "": 1,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
    "Ei": 1 << 60,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
"""Suffixes of a byte quantity, as Kubernetes writes memory (``512Mi``, ``2Gi``, ``800M``)."""


def parse_byte_quantity(v: Any) -> int:
    """A number of bytes: an integer, or a Kubernetes-style quantity string -- digits and an
    optional suffix ``Ki Mi Gi Ti Pi Ei`` (powers of 1024) or ``k M G T P E`` (powers of 1000).
    Exact integer arithmetic; fractions, exponents and other suffixes are refused."""
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 0:
            raise _err("byte_quantity", f"{v} is not a number of bytes (negative)")
        return v
    if not isinstance(v, str):
        got = repr(v) if isinstance(v, bool | float) else type(v).__name__
        raise _err("byte_quantity", f"expected a whole number of bytes or a quantity such as 512Mi, got {got}")
    s = v
    m = _QUANTITY.fullmatch(s)
    if m is None:
        if _FRACTION.fullmatch(s):
            raise _err(
                "byte_quantity",
                f"{s!r}: write a whole number with a smaller unit (e.g. 1536Mi, not 1.5Gi)",
            )
        raise _err(
            "byte_quantity",
            f"{s!r} is not a byte quantity: a whole number with an optional suffix Ki, Mi, Gi, Ti "
            "(powers of 1024) or k, M, G, T (powers of 1000), e.g. 512Mi or 2Gi",
        )
    return int(m.group(1)) * QUANTITY_UNITS[m.group(2) or ""]


def format_bytes(n: int) -> str:
    """``536870912`` -> ``512 MiB``, ``671457280`` -> ``640.4 MiB``, ``8032`` -> ``7.8 KiB``: the
    largest binary unit not above ``n``, exact when whole, else with one decimal."""
    for unit, name in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= unit:
            return f"{n // unit} {name}" if n % unit == 0 else f"{n / unit:.1f} {name}"
    return f"{n} bytes"


def _json_str(description: str, **extra: Any) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "description": description, **extra})


IPAddress = Annotated[
    IP, PlainValidator(_parse_ip), PlainSerializer(str, return_type=str), _json_str("IPv4 or IPv6 address")
]
IPv4 = Annotated[
    ipaddress.IPv4Address,
    PlainValidator(_parse_ipv4),
    PlainSerializer(str, return_type=str),
    _json_str("IPv4 address"),
]
IPNetwork = Annotated[
    Network, PlainValidator(_parse_network), PlainSerializer(str, return_type=str), _json_str("CIDR prefix")
]
IPInterface = Annotated[
    Interface,
    PlainValidator(_parse_interface),
    PlainSerializer(lambda i: i.with_prefixlen, return_type=str),
    _json_str("address with prefix length, e.g. 192.0.2.10/24"),
]


def _lip_str(n: Network) -> str:
    return str(n.network_address) if n.num_addresses == 1 else str(n)


LipEntry = Annotated[
    Network,
    PlainValidator(_parse_lip_entry),
    PlainSerializer(_lip_str, return_type=str),
    _json_str("LIP pool entry: one address or a CIDR prefix"),
]
Duration = Annotated[
    float,
    PlainValidator(_parse_duration),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}],
            "description": "seconds, or a duration such as 250ms, 2s, 5m",
        }
    ),
]
Name = Annotated[
    str,
    Field(strict=True),
    AfterValidator(_check_name),
    WithJsonSchema({"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"}),
]
Community = Annotated[str, PlainValidator(_check_community), _json_str("BGP community ASN:VALUE")]
StatusRange = Annotated[
    str, PlainValidator(_check_status_range), _json_str("HTTP status or range, e.g. 200 or 200-399")
]
Watermark = Annotated[
    int | str,
    PlainValidator(_check_watermark),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^\d+(\.\d+)?%$"}]}),
]
ByteQuantity = Annotated[
    int,
    PlainValidator(parse_byte_quantity),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"},
            ],
            "description": "bytes, or a quantity such as 512Mi, 2Gi, 800M",
        }
    ),
]
Port = Annotated[int, Field(ge=1, le=65535)]
ASN = Annotated[int, Field(ge=1, le=4294967295)]
Text = Annotated[str, Field(max_length=1024)]


def status_matches(ranges: list[str], status: int) -> bool:
    """Whether an HTTP status is in any of the ranges (``200``, ``200-399``)."""
    for r in ranges:
        low, _, high = r.partition("-")
        if int(low) <= status <= int(high or low):
            return True
    return False


def watermark_count(watermark: int | str, total: int) -> int:
    """The number of healthy backends a watermark asks for out of ``total`` (percent rounds up)."""
    if isinstance(watermark, int):
        return watermark
    return math.ceil(float(watermark.rstrip("%")) * total / 100 - 1e-9)
