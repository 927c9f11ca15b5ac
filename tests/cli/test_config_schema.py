"""docs/config.schema.json: what `make config-schema` generates from the models, a valid JSON
Schema, and one that the example document (and editors, through its modeline) can use."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from tests.cli.vgwctl import REPO
from tests.config.bad_documents import example
from tests.config.gen import generate
from vgw.config.schemagen import main as schemagen_main
from vgw.config.schemagen import render

DOCS = REPO / "docs"
SCHEMA = DOCS / "config.schema.json"
EXAMPLE = DOCS / "config-example.yaml"


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA.read_text())
    return loaded


def test_checked_in_schema_is_fresh() -> None:
    assert SCHEMA.is_file() and SCHEMA.read_text() == render(), (
        "docs/config.schema.json is stale (run `make config-schema`)"
    )


def test_schemagen_writes_what_is_checked_in_and_refuses_bad_usage(tmp_path: Any) -> None:
    out = tmp_path / "s.json"
    assert schemagen_main([str(out)]) == 0 and out.read_text() == SCHEMA.read_text()
    assert schemagen_main([]) == 2
    assert schemagen_main([str(tmp_path / "no" / "such" / "dir" / "s.json")]) == 2


def test_schema_is_a_valid_2020_12_schema() -> None:
    s = schema()
    Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["additionalProperties"] is False  # unknown fields are errors, as in the validator


def test_example_carries_the_modeline_and_validates() -> None:
    first = EXAMPLE.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=config.schema.json"
    assert (EXAMPLE.parent / first.split("$schema=", 1)[1]).resolve() == SCHEMA.resolve()
    Draft202012Validator(schema()).validate(yaml.safe_load(EXAMPLE.read_text()))


def test_generated_documents_validate() -> None:
    validator = Draft202012Validator(schema())
    for services in (1, 25):
        validator.validate(generate(services))


@pytest.mark.parametrize(
    ("path", "value", "at"),
    [
        (["nodes", 0, "surprise"], 1, ["nodes", 0]),  # an unknown field: the object refuses it
        (["vips", 0, "services", 0, "port"], 0, ["vips", 0, "services", 0, "port"]),
        (["vips", 0, "services", 0, "scheduler"], "random", ["vips", 0, "services", 0, "scheduler"]),
        (["clusters", 0, "name"], "-bad name", ["clusters", 0, "name"]),
        (["version"], 2, ["version"]),
    ],
)
def test_schema_refuses_what_the_model_refuses(path: list[Any], value: Any, at: list[Any]) -> None:
    doc = copy.deepcopy(example())
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    errors = list(Draft202012Validator(schema()).iter_errors(doc))
    assert [list(e.absolute_path) for e in errors] == [at], [e.message for e in errors]
