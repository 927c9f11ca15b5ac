"""Commands that other installed parts of VGW add to vgwctl: the entry-point group
``vgwctl.commands``, each entry ``name = "module:add_parser"`` (e.g. ``lab``, from deploy/lab). So
vgw/, the floor every part builds on, imports nothing above it."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Any

GROUP = "vgwctl.commands"


def add_parsers(sub: Any) -> None:
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            add_parser = ep.load()
        except ModuleNotFoundError as exc:
            if exc.name and ep.module.startswith(exc.name):
                continue  # that part is not installed here (the images carry no lab): no such command
            print(f"vgwctl: the {ep.name!r} command is unavailable ({ep.value}: {exc})", file=sys.stderr)
            continue
        except Exception as exc:  # one broken add-on must not take every other command with it
            print(f"vgwctl: the {ep.name!r} command is unavailable ({ep.value}: {exc})", file=sys.stderr)
            continue
        add_parser(sub)
