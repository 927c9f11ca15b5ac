"""vgwctl: the operator's and scripts' door into VGW.

Exit codes scripts can rely on: 0 success, 1 failure, 2 bad usage or settings, 3 NATS (or another
VGW service) unreachable, 4 invalid configuration (nothing changed), 5 revision conflict (nothing
changed), 6 not found, 7 `diff` failed (its 1 means "there are differences"), 130 interrupted.
Options such as --nats, the config service's connection options, -o and the lab's --id go before or
after the subcommand (globalopts.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from vgw.buildinfo import build_info

from . import (
    bgp_view,
    completion,
    config_cmds,
    events,
    forwarder,
    globalopts,
    health_view,
    plugins,
    security,
    top,
    validate,
)

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


class _Version(argparse.Action):
    """--version, found only when asked for (it may run git)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(build_info().line(parser.prog))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vgwctl", description="Operate a VGW deployment.")
    parser.add_argument("--version", action=_Version, help="print vgwctl's version and git commit, and exit")
    parser.add_argument("--nats", metavar="URL", help="NATS URL (default: $VGW_NATS_URL or nats://127.0.0.1:4222)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_cmds.add_parsers(sub)
    validate.add_parser(sub)
    health_view.add_parser(sub)  # `get health`: after config_cmds, whose `get` it extends
    events.add_parser(sub)
    forwarder.add_parser(sub)
    plugins.add_parsers(sub)  # vgwctl lab (deploy/lab/command.py)
    security.add_parser(sub)
    top.add_parser(sub)
    bgp_view.add_parser(sub)
    completion.add_parser(sub)
    globalopts.install(parser)  # last: it sees every command's options
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="vgwctl: %(message)s", stream=sys.stderr)
    logging.getLogger("nats.aio.client").setLevel(logging.CRITICAL)
    # asyncio's TLS transport warns "returning true from eof_received() has no effect when using
    # ssl" each time nats-py's connection closes: noise on every command run against a TLS bus
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    globalopts.resolve(parser, args)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: that is how a pipeline ends, not an error.
        sys.stderr.close()
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())
