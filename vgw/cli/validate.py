"""``vgwctl validate -f FILE``: check a configuration document offline, with the config service's
own validator (vgw.config.validate) and its error format (``path: reason``). No NATS, no config
service: for editors, pre-commit hooks and CI.

Exit codes: 0 valid (warnings, if any, on stderr), 4 invalid, 2 unreadable file or bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vgw.config.validate import ConfigInvalid, document_warnings, load_document, scrub_issue

from .output import FORMATS, emit

EXIT_OK, EXIT_USAGE, EXIT_INVALID = 0, 2, 4


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "validate",
        help="check a configuration document offline (no config service needed)",
        description="Validate a YAML/JSON configuration document exactly as the config service would "
        "(`apply` refuses what this refuses, with the same `path: reason` lines), without connecting to "
        "anything. Warnings (valid but likely wrong) go to stderr and do not fail it.",
    )
    p.add_argument("-f", "--file", required=True, metavar="FILE", help="the document ('-' for stdin)")
    p.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format (default table)")
    p.set_defaults(func=run)


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def run(args: argparse.Namespace) -> int:
    name = "stdin" if args.file == "-" else args.file
    try:
        data = _read(args.file)
    except OSError as exc:
        print(f"vgwctl: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        doc = load_document(data)
    except ConfigInvalid as exc:
        issues = [scrub_issue(i) for i in exc.issues]  # as the service does: never echo a password
        if args.output != "table":
            emit({"valid": False, "violations": [{"path": i.path, "reason": i.reason} for i in issues]}, args.output)
        print(f"vgwctl: {name}: invalid configuration ({len(issues)} problem(s)):", file=sys.stderr)
        for issue in issues:
            print(f"  {issue}", file=sys.stderr)
        return EXIT_INVALID
    warnings = [str(w) for w in document_warnings(doc)]
    for w in warnings:
        print(f"vgwctl: warning: {w}", file=sys.stderr)
    summary = (
        f"{name}: valid ({len(doc.vips)} VIPs, {sum(len(v.services) for v in doc.vips)} services, "
        f"{len(doc.nodes)} nodes, {len(warnings)} warning(s))"
    )
    emit({"valid": True, "violations": [], "warnings": warnings}, args.output, summary)
    return EXIT_OK
