"""``harness certify CELL``: run the cell's conformance suite, write a verifiable report.

pytest's own output goes to pytest.log in the report folder; the terminal shows
progress capability by capability, then the verdicts and, for each failure, the
command that reruns just that test.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness import certification, lock, pipeline, upstream
from harness.commands import (
    add_command,
    add_hw_class_argument,
    add_wait_argument,
    wait_for,
    with_hw_class,
)
from harness.errors import UsageError
from harness.matrix import Cell, Matrix, load_matrix
from harness.report import bundle, waivers


def add_parser(sub, parents) -> None:
    parser = add_command(
        sub,
        "certify",
        certify,
        parents,
        help="run a cell's conformance suite and write a verifiable report",
        description="Run the cell's suites (default: harness.conformance) and write junit.xml, "
        "report.json, report.md, report.html and SHA256SUMS into the cell's results folder.",
    )
    parser.add_argument("cell", help="cell name, with or without its certify- prefix")
    parser.add_argument("--out", metavar="DIR", help="report folder (default: results/<cell>/)")
    parser.add_argument("--sign", metavar="KEY", help="sign the report with this SSH private key")
    parser.add_argument(
        "--waivers",
        metavar="FILE",
        help="waivers TOML: known failures reported as waived (default: the cell's `waivers`)",
    )
    parser.add_argument(
        "--upstream",
        metavar="DIR",
        help="also run PyTorch's test/distributed/tensor (of the checkout matching your torch), "
        "migrated into a temporary folder (DIR is not edited); each file is a capability",
    )
    parser.add_argument(
        "--upstream-only",
        action="store_true",
        help="with --upstream: run only DIR's files, not the cell's suites",
    )
    parser.add_argument(
        "--ops",
        metavar="NAMES",
        help="the ops capability's OpInfos: all (the default; a certification runs every op), "
        "or comma-separated names or globs for a quick look (default: HARNESS_OPS, else all)",
    )
    parser.add_argument(
        "--reference",
        metavar="FILE",
        help="the record of DTensor's own op failures to judge the ops against (default: the "
        "kit's shipped record for this torch and world size, else the user cache, else "
        "computed in this run on CPU under LocalTensor and cached); see `harness reference`",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show pytest's output instead of progress"
    )
    add_wait_argument(parser)
    add_hw_class_argument(parser)


def certify(args) -> int:
    matrix = load_matrix(args.matrix)
    cell = with_hw_class(matrix.cell(args.cell), args)
    out = Path(args.out) if args.out else cell.results_dir
    if args.sign and not Path(args.sign).is_file():
        raise UsageError(f"signing key {args.sign!r} not found; pass --sign PRIVATE_KEY_FILE.")
    known = waivers.for_cell(cell, args.waivers)  # a bad file stops before anything runs
    if args.ops is None:
        env = os.environ.get("HARNESS_OPS", "").strip()
        args.ops = env if env not in ("", "off", "0", "no") else "all"
    if args.ops.strip() in ("", "off", "0", "no"):
        raise UsageError(
            f"--ops {args.ops!r}: a certification runs the ops capability; "
            "give all (the default) or op names."
        )
    if args.ops.strip() != "all":
        _check_ops(args.ops)  # a name that matches no op stops here, not after the run
    if args.upstream_only and not args.upstream:
        raise UsageError("--upstream-only runs PyTorch's files: add --upstream DIR.")
    if args.upstream:
        upstream.check(args.upstream)  # not a DTensor test folder: stop before anything runs
    pipeline.check_host(cell)
    # one certify per folder: a second one would delete and overwrite this one's files
    with lock.hold(out, f"harness certify {cell.name}", wait_for(args)) as held:
        return _certify(cell, matrix, out, held, args, known)


def _check_ops(spec: str) -> None:
    """Every name or glob of ``--ops`` must match an op of the installed torch's database."""
    import difflib
    import fnmatch

    from harness import compat

    keys = [
        f"{op.name}:{op.variant_test_name}" if op.variant_test_name else op.name
        for op in compat.op_database()
    ]
    for name in (n.strip() for n in spec.split(",")):
        if name and not any(fnmatch.fnmatchcase(k, name) for k in keys):
            close = difflib.get_close_matches(name, keys, n=5, cutoff=0.5)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise UsageError(
                f"--ops {spec!r}: {name!r} names no op of torch's OpInfo database{hint} "
                f"(names or globs, comma-separated; or all)."
            )


def _certify(cell: Cell, matrix: Matrix, out: Path, held: int, args, known) -> int:
    report, code = certification.run(
        cell,
        matrix,
        out,
        held,
        ops=args.ops,
        passthrough=args.passthrough,
        command=_command(cell, args),
        known=known,
        upstream_dir=args.upstream,
        upstream_only=args.upstream_only,
        verbose=args.verbose,
        reference_file=args.reference,
    )
    if report is None:
        _tail(out / "pytest.log")
        print(
            f"harness: certify {cell.name}: pytest wrote no JUnit XML (exit {code}); "
            f"see {out / 'pytest.log'}",
            file=sys.stderr,
        )
        return code or 2
    bundle.write(out, report)
    if args.sign:
        bundle.sign(out, args.sign)
    _summary(cell, report, out, args)
    return 0 if report["verdict"] == "pass" else 1


def _command(cell: Cell, args) -> list[str]:
    """This run's ``harness certify`` line, as the report records it."""
    command = ["harness", "certify", cell.name]
    command += ["--matrix", args.matrix] if args.matrix else []
    command += ["--waivers", args.waivers] if getattr(args, "waivers", None) else []
    if getattr(args, "ops", None) not in (None, "all"):
        command += ["--ops", args.ops]
    command += ["--reference", args.reference] if getattr(args, "reference", None) else []
    if getattr(args, "upstream", None):
        command += ["--upstream", args.upstream]
        command += ["--upstream-only"] if args.upstream_only else []
    command += ["--", *args.passthrough] if args.passthrough else []
    return command


def _summary(cell: Cell, report: dict, out: Path, args) -> None:
    print()
    width = max((len(c["title"]) for c in report["capabilities"]), default=10)
    for cap in report["capabilities"]:
        print(
            f"  {cap['title']:<{width}}  {cap['verdict']:<4}  {cap['passed']} passed, "
            f"{cap['failed'] + cap['error']} failed, {cap['skipped']} skipped"
            + (f", {cap['waived']} waived" if cap.get("waived") else "")
            + (f", {cap['own']} DTensor's own" if cap.get("own") else "")
        )
    failures = [
        t for c in report["capabilities"] for t in c["tests"] if t["outcome"] in ("failed", "error")
    ]
    if failures:
        print()
    for test in failures[:20]:
        print(f"  FAILED {test['id']}: {test.get('reason', '')}")
        rerun = certification.rerun_command(
            cell, test["id"], args.matrix, getattr(args, "upstream", None), out, test.get("op", "")
        )
        print(f"    rerun: {rerun}")
    if len(failures) > 20:
        print(f"  ... {len(failures) - 20} more in {out / 'report.md'}")
    for line in _waiver_lines(report):
        print(line)
    from harness.report import render

    for n, line in enumerate(render.reference_summary(report.get("reference"))):
        print(f"  {'reference: ' if n == 0 else '  '}{line}")
    summary = report["summary"]
    waived = f", {summary['waived']} waived" if summary.get("waived") else ""
    waived += f", {summary['own']} DTensor's own" if summary.get("own") else ""
    print(
        f"\nharness: certify {cell.name}: {report['verdict'].upper()} "
        f"({summary['passed']} passed, {summary['failed'] + summary['error']} failed{waived}, "
        f"{summary['skipped']} skipped in {report['run']['wall_s']} s)"
    )
    how = "--allowed-signers FILE" if args.sign else "--integrity-only"  # unsigned: exit 3 else
    hw = report["run"].get("hw_classes")
    if hw:
        counted = hw["counted"] if isinstance(hw["counted"], str) else ", ".join(hw["counted"])
        left = ", ".join(f"{n} {name}" for name, n in hw["left_out"].items()) or "none"
        print(f"  hw classes counted: {counted} (and unclassified tests); left out: {left}")
    print(f"  report: {out / 'report.html'}  (verify: harness report verify {out} {how})")


def _waiver_lines(report: dict) -> list[str]:
    """Waivers to act on: stale ones (their tests pass now) and unused ones."""
    section = report.get("waivers") or {}
    lines = []
    for entry in section.get("entries", []):
        if entry["status"] != "used":
            what = entry.get("test") or f"op {entry.get('op')}"
            lines.append(f"  waiver {entry['status']}: {what} ({entry['issue']})")
    return ["", *lines] if lines else []


def _tail(log: Path, lines: int = 30) -> None:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return
    print("\n".join(text[-lines:]), file=sys.stderr)
