"""Generate the public event documentation: one JSON Schema per event type and an AsyncAPI 3.0
document, both derived from the models so they cannot drift. ``make events-docs`` runs this; a test
fails when the checked-in files differ from what it would write.

    python -m vgw.events.docgen docs/events
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from vgw import __version__

from .base import Event, registry
from .codec import CONTENT_TYPE, SPECVERSION

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"

PARAM_DOCS = {
    "service": "Service name.",
    "backend": "Backend endpoint: address with '.' or ':' replaced by '-', then '_' and the port "
    "(198.51.100.7:80 -> 198-51-100-7_80).",
    "node": "Node id.",
    "vip": "VIP address encoded like backend addresses (192.0.2.10 -> 192-0-2-10), or 'all'.",
    "cluster": "Cluster name.",
    "requester_kind": "Who asked: 'operator' or 'monitor', the part of 'requester' before the '/'. NATS lets only "
    "that kind's identities publish on it (docs/security.md), so a subscriber can trust the requester's kind.",
}


def schema_filename(event_type: str) -> str:
    return f"{event_type}.schema.json"


def json_schema(model: type[Event]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="serialization")
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": schema_filename(model.event_type()),
        "title": model.event_type(),
        "description": (model.__doc__ or "").strip(),
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def _camel(name: str) -> str:
    head, *rest = name.replace("_", ".").split(".")
    return head + "".join(p.capitalize() for p in rest)


def _headers_schema(event_type: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time"],
        "properties": {
            "ce-specversion": {"const": SPECVERSION},
            "ce-id": {"type": "string", "description": "Unique event id (UUID)."},
            "ce-source": {"type": "string", "description": "URI-reference of the producer, /vgw/<service>/<instance>."},
            "ce-type": {"const": event_type},
            "ce-time": {"type": "string", "format": "date-time"},
            "ce-subject": {"type": "string", "description": "What the event is about, readable."},
            "ce-datacontenttype": {"const": CONTENT_TYPE},
            "content-type": {"const": CONTENT_TYPE},
            "traceparent": {"type": "string", "description": "W3C trace context of the producer span."},
            "tracestate": {"type": "string"},
        },
    }


def asyncapi(models: list[type[Event]]) -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for model in models:
        key = _camel(model.name)
        address = ".".join((model.subject_base(), *(f"{{{p}}}" for p in model.subject_params)))
        channel: dict[str, Any] = {
            "address": address,
            "description": model.summary,
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        if model.subject_params:
            channel["parameters"] = {p: {"description": PARAM_DOCS[p]} for p in model.subject_params}
        channels[key] = channel
        operations[f"receive{key[0].upper()}{key[1:]}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": f"Subscribe to {model.event_type()} (NATS subject {model.subject_filter()}).",
            "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
        }
        messages[key] = {
            "name": model.event_type(),
            "title": model.__name__,
            "summary": model.summary,
            "contentType": CONTENT_TYPE,
            "headers": _headers_schema(model.event_type()),
            "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": {"$ref": schema_filename(model.event_type())}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "VGW events",
            "version": __version__,
            "description": (
                "Events published by VGW services on NATS as CloudEvents 1.0 in binary mode: context "
                "attributes in ce-* headers, data as JSON, W3C trace context in traceparent. Every event "
                "is also kept in the JetStream stream VGW_EVENTS (subjects vgw.v1.>) for replay."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "nats": {"host": "127.0.0.1:4222", "protocol": "nats", "description": "VGW's NATS (VGW_NATS_URL)."}
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render() -> dict[str, str]:
    """File name -> content, for every generated file."""
    models = [registry()[t] for t in sorted(registry())]
    files = {
        schema_filename(m.event_type()): json.dumps(json_schema(m), indent=2, sort_keys=True) + "\n" for m in models
    }
    files["asyncapi.yaml"] = "# Generated by `make events-docs` from vgw/events; do not edit.\n" + yaml.safe_dump(
        asyncapi(models), sort_keys=False, width=100
    )
    return files


def write(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render().items():
        path = out_dir / name
        path.write_text(content)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vgw.events.docgen OUT_DIR", file=sys.stderr)
        return 2
    for path in write(Path(args[0])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
