"""Draft an expectations file (known failures) from a run of the ops capability.

    python bench/ops_expectations.py JUNIT_XML TORCH_MINOR WORLD_SIZE > harness/conformance/xfails/torch-X.Y.toml

Reads the JUnit XML of ``pytest harness/conformance/test_ops.py --harness-ops all``
(or ``harness certify``'s junit.xml), run with or without that torch's current
file, and prints a TOML file whose ``[xfail]`` lists every op that failed, each
with the first line of its failure as the reason, keeps the current entries of
the ops that still fail as expected, drops those that now pass (strict XPASS),
whose ``[skip]`` keeps what the current file skips, and whose ``[slow]`` keeps its
slowest ops (measure them with ``bench/op_seconds.py``). Review the reasons before
committing: a failure that is a bug in the kit belongs in an issue, not in this file.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from harness.report import capabilities, junit


def _reason(text: str) -> str:
    """The failure's own words, without the rank prefix and the sample's numbers."""
    text = re.sub(r"^.*? failed on \d+ of \d+ ranks: ", "", text)
    text = re.sub(r"^ranks? [\d, ]+ failed: ", "", text)
    text = re.sub(r"^AssertionError: ", "", text)
    return text.strip()[:160] or "fails"


def draft(
    results: list[junit.CaseResult],
    minor: str,
    world: int,
    skip: dict[str, str],
    by_method: dict[str, str],
    xfail: dict[str, str] | None = None,
    slow: dict[str, float] | None = None,
) -> str:
    """``by_method``: test name -> op key, for JUnit written without the op property;
    ``xfail``, ``slow``: the current file's known failures and slowest ops."""
    failed = {}
    for r in results:
        op = r.op or by_method.get(r.id.rpartition("::")[2].rpartition(".")[2], "")
        verdict = capabilities.op_verdict(r.outcome, r.reason) if op else ""
        if verdict == "xfailed" and op in (xfail or {}):
            failed[op] = xfail[op]  # still failing as the file says
        elif verdict == "failed" and "XPASS(strict)" not in r.reason:
            failed[op] = _reason(r.reason)
    lines = [
        f"# Known DTensor failures on torch {minor}'s OpInfo samples (the ops capability).",
        "# One entry per op: its key (name, or name:variant) and why it fails. Entries",
        "# are strict: an op listed here that passes fails the run, so remove it then.",
        "# Drafted by bench/ops_expectations.py from a full run; see docs/certification.md.",
        "schema = 1",
        f'torch = "{minor}"',
        f"world_size = {world}  # found at this world size: strict here, not at others",
        "",
        "[xfail]",
        *(f"{json.dumps(op)} = {json.dumps(why)}" for op, why in sorted(failed.items())),
        "",
        "[skip]",
        *(f"{json.dumps(op)} = {json.dumps(why)}" for op, why in sorted(skip.items())),
    ]
    if slow:
        lines += [
            "",
            "# The slowest ops, seconds on one core (bench/op_seconds.py): started first.",
            "[slow]",
            *(f"{json.dumps(op)} = {s:g}" for op, s in sorted(slow.items(), key=lambda i: -i[1])),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or not re.fullmatch(r"\d+\.\d+", args[1]) or not args[2].isdigit():
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    from harness.conformance import _ops

    current = _ops.XFAILS / f"torch-{args[1]}.toml"
    from harness import compat

    keys = [_ops.op_key(op) for op in compat.op_database()]
    known = _ops.load_expectations(current if current.is_file() else None, keys)
    by_method = {_ops.method_name(k): k for k in keys}
    results = junit.parse(Path(args[0]))
    sys.stdout.write(
        draft(results, args[1], int(args[2]), known.skip, by_method, known.xfail, known.slow)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
