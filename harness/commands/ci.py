"""``harness ci github|gitlab``: a CI workflow generated from the matrix."""

from __future__ import annotations

import sys
from pathlib import Path

from harness import ci
from harness.commands import add_command
from harness.errors import UsageError


def add_parser(sub, parents) -> None:
    parser = add_command(
        sub,
        "ci",
        run,
        parents,
        help="write a GitHub or GitLab CI workflow from the matrix",
        description="One job per nox session (test-CELL, certify-CELL) on the accelerator's "
        "runners (accelerators.X.runs_on), in the cell's image, with JUnit and report "
        "uploads, and a merge job.",
    )
    parser.add_argument("system", choices=ci.SYSTEMS)
    parser.add_argument(
        "--only",
        metavar="NAMES",
        default="",
        help="accelerators or cells, comma-separated (default: every cell)",
    )
    parser.add_argument(
        "--install",
        metavar="SPEC",
        action="append",
        help="what the jobs pip-install beside nox (default: this dtensor-harness "
        "release; repeat for more, e.g. --install . for your own package)",
    )
    parser.add_argument(
        "--out", metavar="FILE", help="default: .github/workflows/dtensor-harness.yml or "
        ".gitlab-ci.yml; - for stdout",
    )  # fmt: skip
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when FILE is not what would be written"
    )


def run(args) -> int:
    out = args.out or ci.DEFAULT_PATHS[args.system]
    text = ci.workflow_text(args.system, args.matrix, args.only, args.install, out)
    if out == "-":
        sys.stdout.write(text)
        return 0
    path = Path(out)
    if args.check:
        try:
            same = path.read_text(encoding="utf-8") == text
        except FileNotFoundError:
            raise UsageError(f"{out} does not exist; write it: harness ci {args.system}") from None
        if not same:
            print(f"harness: {out} is out of date; make it again with the command in its header")
            return 1
        print(f"harness: {out} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"harness: wrote {out} ({text.count(chr(10))} lines)")
    return 0
