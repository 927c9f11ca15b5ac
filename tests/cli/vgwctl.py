"""Running vgwctl in tests: parsed in-process (the option machinery), or as a real process."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from vgw.cli import globalopts
from vgw.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    """What vgwctl's main() hands the command (it exits 2 on a usage error, like vgwctl)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    globalopts.resolve(parser, args)
    return args


def run(
    *argv: str, env: dict[str, str], stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vgw.cli.main", *argv],
        input=stdin if stdin is not None else "",
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
