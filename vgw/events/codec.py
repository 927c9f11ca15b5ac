"""CloudEvents 1.0 binary mode over NATS: attributes in ``ce-*`` headers, data as a JSON body.

Any CloudEvents SDK, or plain nats-py, can read what this writes. Decoding never raises anything
but :class:`Rejected`, whose ``reason`` is a bounded label for metrics.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from pydantic import ValidationError

from .base import Event, registry

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
REQUIRED = ("specversion", "id", "source", "type")
# Printable ASCII except space, '"' and '%' passes unencoded (CloudEvents HTTP binding 3.1.3.2).
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


class Rejected(Exception):  # noqa: N818 - it is a verdict, not an error of ours
    """A message that is not a valid VGW event. ``reason`` is a metric label."""

    REASONS = (
        "no_headers",
        "missing_attribute",
        "bad_specversion",
        "unknown_type",
        "subject_mismatch",
        "bad_content_type",
        "bad_time",
        "not_json",
        "invalid_data",
    )

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in self.REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class CloudEventMeta:
    """The CloudEvents context attributes of a message."""

    id: str
    source: str
    type: str
    time: datetime | None
    subject: str | None
    specversion: str = SPECVERSION
    extensions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Encoded:
    subject: str
    headers: dict[str, str]
    body: bytes
    meta: CloudEventMeta


def _enc(value: str) -> str:
    return quote(value, safe=_SAFE)


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` and microseconds, as CloudEvents recommends."""
    if t.tzinfo is None:
        raise ValueError("event time must be timezone-aware")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode(
    event: Event,
    *,
    source: str,
    event_id: str | None = None,
    time: datetime | None = None,
) -> Encoded:
    meta = CloudEventMeta(
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=event.event_type(),
        time=time or datetime.now(UTC),
        subject=event.ce_subject(),
    )
    headers = {
        "ce-specversion": SPECVERSION,
        "ce-id": _enc(meta.id),
        "ce-source": _enc(meta.source),
        "ce-type": _enc(meta.type),
        "ce-time": format_time(meta.time),  # type: ignore[arg-type]
        "ce-datacontenttype": CONTENT_TYPE,
        # The Go SDK reads the plain header; set both so every SDK agrees.
        "content-type": CONTENT_TYPE,
    }
    if meta.subject is not None:
        headers["ce-subject"] = _enc(meta.subject)
    body = event.model_dump_json(exclude_none=False).encode()
    return Encoded(subject=event.subject(), headers=headers, body=body, meta=meta)


def _lower(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {k.lower(): v for k, v in (headers or {}).items()}


def _parse_time(raw: str) -> datetime:
    try:
        t = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise Rejected("bad_time", f"ce-time {raw[:64]!r} is not RFC 3339") from exc
    if t.tzinfo is None:
        raise Rejected("bad_time", f"ce-time {raw[:64]!r} has no offset")
    return t


def decode_meta(headers: Mapping[str, str] | None) -> CloudEventMeta:
    """Read and check the CloudEvents attributes, without touching the data."""
    if not headers:
        raise Rejected("no_headers", "message has no headers (not a CloudEvents binary-mode message)")
    h = _lower(headers)
    for attr in REQUIRED:
        if not h.get(f"ce-{attr}"):
            raise Rejected("missing_attribute", f"header ce-{attr} is missing")
    if h["ce-specversion"] != SPECVERSION:
        raise Rejected("bad_specversion", f"ce-specversion {h['ce-specversion'][:16]!r}, want {SPECVERSION}")
    ctype = h.get("ce-datacontenttype") or h.get("content-type") or CONTENT_TYPE
    if ctype.split(";")[0].strip().lower() != CONTENT_TYPE:
        raise Rejected("bad_content_type", f"content type {ctype[:64]!r}, want {CONTENT_TYPE}")
    known = {"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-subject", "ce-datacontenttype"}
    return CloudEventMeta(
        id=unquote(h["ce-id"]),
        source=unquote(h["ce-source"]),
        type=unquote(h["ce-type"]),
        time=_parse_time(h["ce-time"]) if h.get("ce-time") else None,
        subject=unquote(h["ce-subject"]) if "ce-subject" in h else None,
        extensions={k[3:]: unquote(v) for k, v in h.items() if k.startswith("ce-") and k not in known},
    )


def decode(subject: str, headers: Mapping[str, str] | None, body: bytes) -> tuple[CloudEventMeta, Event]:
    """Decode and validate a message into its event model, or raise :class:`Rejected`."""
    meta = decode_meta(headers)
    model = registry().get(meta.type)
    if model is None:
        raise Rejected("unknown_type", f"unknown event type {meta.type[:128]!r}")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise Rejected("not_json", f"body is not JSON ({len(body)} bytes): {str(exc)[:120]}") from exc
    try:
        event = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise Rejected("invalid_data", f"{meta.type}: {where}: {first['msg']} ({exc.error_count()} errors)") from exc
    if event.subject() != subject:
        raise Rejected("subject_mismatch", f"subject {subject[:200]!r} does not match the event ({event.subject()!r})")
    return meta, event
