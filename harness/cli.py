"""``harness`` / ``python -m harness``: a registry of subcommands, nothing more.

Each subcommand lives in ``harness.commands.<name>`` with ``add_parser(subparsers,
parents)`` and ``run(args) -> int``. Bad input raises UsageError, printed here as
one line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from harness import lifelines
from harness._version import __version__
from harness.errors import UsageError

COMMANDS = (
    "matrix",
    "run",
    "doctor",
    "migrate",
    "certify",
    "report",
    "reference",
    "container",
    "init",
    "ci",
)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--matrix", metavar="FILE", help="matrix file (default: ./matrix.toml)")
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Run DTensor test suites across a matrix of accelerators.",
        epilog="Arguments after `--` go to pytest, e.g. harness run cpu-4rank -- -k redistribute",
    )
    parser.add_argument("--version", action="version", version=f"dtensor-harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"harness.commands.{name}").add_parser(sub, [common])
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    args.passthrough = passthrough
    if os.environ.get("NOX_CURRENT_SESSION"):  # a nox session runs us: end with it, even
        lifelines.die_with_parent()  # by SIGKILL (our pytest, ranks, container follow)
    try:
        return int(args.handler(args) or 0)
    except UsageError as exc:
        for line in str(exc).splitlines() or [""]:  # several problems: one line each
            print(f"harness: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
