"""One module per ``harness`` subcommand, each with ``add_parser`` and a handler.

A command parses, calls the library and prints; no command imports another
(.importlinter: thin-commands). What several commands parse alike lives here.
"""

from __future__ import annotations


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
