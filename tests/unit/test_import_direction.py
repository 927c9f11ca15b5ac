"""vgw/ is the floor: the services, the shim and the lab build on it, so nothing in it imports them
(the lab adds ``vgwctl lab`` through an entry point, vgw/cli/plugins.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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


def test_an_add_on_not_installed_is_no_command_and_a_broken_one_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse
    from importlib.metadata import EntryPoint

    from vgw.cli import plugins

    eps = [
        EntryPoint("absent", "deploy_not_here.command:add_parser", plugins.GROUP),  # e.g. the lab in an image
        EntryPoint("broken", "vgw.cli.plugins:no_such_function", plugins.GROUP),
        EntryPoint("lab", "deploy.lab.command:add_parser", plugins.GROUP),
    ]
    monkeypatch.setattr(plugins, "entry_points", lambda group: [e for e in eps if e.group == group])
    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    plugins.add_parsers(sub)
    assert set(sub.choices) == {"lab"}
    err = capsys.readouterr().err
    assert "'broken' command is unavailable" in err and "absent" not in err
