"""One module per ``harness`` subcommand, each with ``add_parser`` and a handler.

A command parses, calls the library and prints; no command imports another
(.importlinter: thin-commands). What several commands parse alike lives here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence


def add_command(
    sub, name: str, handler: Callable, parents: Sequence = (), **kwargs
) -> argparse.ArgumentParser:
    """A subcommand, or a verb of one, that runs ``handler(args) -> exit code``:
    argparse's add_parser and the ``handler`` harness.cli calls, in one step."""
    parser = sub.add_parser(name, parents=list(parents), **kwargs)
    parser.set_defaults(handler=handler)
    return parser


def print_problems(head: str, problems: Iterable[str]) -> None:
    """A refusal on stderr: ``head``, then each problem on a line of its own."""
    print(head, file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)


def add_wait_argument(parser) -> None:
    """``--wait [SECONDS]``, for commands that take a results folder's lock."""
    parser.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=-1.0,
        default=0.0,
        metavar="SECONDS",
        help="if another run uses the same results folder, wait for it (for ever, or "
        "SECONDS) instead of refusing",
    )


def wait_for(args) -> float | None:
    """--wait as lock.hold takes it: None waits for ever, 0 refuses at once."""
    return None if args.wait < 0 else args.wait


def add_hw_class_argument(parser) -> None:
    """``--hw-class NAMES|all``: the hw_classification classes a run counts."""
    from harness import hwclass

    parser.add_argument(
        "--hw-class",
        metavar="NAMES|all",
        help="count these hw_classification classes (comma-separated: "
        f"{','.join(hwclass.MEMBERS)}), or all; a test of another class is skipped, naming "
        "it (default: the cell's kind, "
        + "; ".join(f"{k}: {','.join(v)}" for k, v in hwclass.COUNTED.items())
        + " and the class of its device type)",
    )


def with_hw_class(cell, args):
    """The cell, counting the classes ``--hw-class`` names (a bad name: one UsageError)."""
    import dataclasses

    from harness import hwclass

    value = getattr(args, "hw_class", None)
    if not value:
        return cell
    names = hwclass.parse(value, "--hw-class")
    return dataclasses.replace(cell, hw_classes=",".join(names) if names else hwclass.ALL)
