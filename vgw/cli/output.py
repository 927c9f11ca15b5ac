"""Output helpers for vgwctl: aligned tables for people, JSON or YAML for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

FORMATS = ("table", "json", "yaml")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[("-" if v is None or v == "" else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["  ".join(v.ljust(widths[i]) for i, v in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


def emit(data: Any, fmt: str, human: str | None = None) -> None:
    """Print ``data`` as JSON or YAML, or ``human`` for the table format."""
    if fmt == "json":
        print(json.dumps(data, indent=2, default=str))
    elif fmt == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    else:
        print(human if human is not None else yaml.safe_dump(data, sort_keys=False).rstrip())
