"""The checked-in event documentation must be what the models generate (`make events-docs`)."""

import json
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

from vgw.events import registry
from vgw.events.docgen import render

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events"


def test_checked_in_event_docs_are_fresh() -> None:
    expected = render()
    stale = [
        name
        for name, content in expected.items()
        if not (DOCS / name).is_file() or (DOCS / name).read_text() != content
    ]
    extra = sorted({p.name for p in DOCS.glob("*.json")} - set(expected))
    assert not stale and not extra, f"docs/events is stale (run `make events-docs`): stale={stale} extra={extra}"


def test_schemas_are_valid_and_asyncapi_references_them() -> None:
    doc = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    assert doc["asyncapi"] == "3.0.0"
    refs = {m["payload"]["schema"]["$ref"] for m in doc["components"]["messages"].values()}
    for event_type in registry():
        schema = json.loads((DOCS / f"{event_type}.schema.json").read_text())
        Draft202012Validator.check_schema(schema)
        assert f"{event_type}.schema.json" in refs
    for channel in doc["channels"].values():
        for param in channel.get("parameters", {}):
            assert f"{{{param}}}" in channel["address"]
