"""vgw/ is the floor: the services, the shim and the lab build on it, so nothing in it imports them
(the lab adds ``vgwctl lab`` through an entry point, vgw/cli/plugins.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ABOVE = ("deploy", "services", "dataplane", "tests")


def imported_modules(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def test_vgw_imports_nothing_above_it() -> None:
    files = sorted((ROOT / "vgw").rglob("*.py"))
    assert len(files) > 50  # the walk found the package
    wrong = [f"{f.relative_to(ROOT)}: {m}" for f in files for m in imported_modules(f) if m.split(".")[0] in ABOVE]
    assert wrong == []


def test_the_lab_command_is_an_installed_entry_point() -> None:
    from vgw.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["lab", "--id", "x1", "down"])
    assert args.lab_command == "down" and args.func.__module__ == "deploy.lab.command"
