"""``harness report verify|merge|diff|sign|build``: check, combine, compare and sign reports."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.commands import add_command, print_problems
from harness.errors import UsageError


def add_parser(sub, parents) -> None:
    parser = sub.add_parser(
        "report", parents=parents, help="verify, merge, diff, sign or build certification reports"
    )
    verbs = parser.add_subparsers(dest="report_command", metavar="VERB", required=True)

    verify = add_command(
        verbs,
        "verify",
        verify_cmd,
        parents,
        help="check that a report folder is unedited (and who signed it)",
        description="Exit 0 when the folder is as certify wrote it and signed by a key of "
        "--allowed-signers; 1 naming what changed, was added, or a signature that does not "
        "verify; 2 when DIR is not a report folder; 3 when it is intact but UNVERIFIED (no "
        "--allowed-signers, so nothing proves who made it: --integrity-only accepts that).",
    )
    verify.add_argument("dirs", nargs="+", metavar="DIR", help="report folder(s)")
    verify.add_argument(
        "--allowed-signers",
        "--key",
        dest="allowed_signers",
        metavar="FILE",
        help="ssh allowed-signers file, or the signer's .pub key: require a good signature",
    )
    verify.add_argument("--identity", metavar="NAME", help="signer identity to require")
    verify.add_argument(
        "--integrity-only",
        action="store_true",
        help="check only that the files are as written (exit 0 without a signer check)",
    )

    merge = add_command(
        verbs,
        "merge",
        merge_cmd,
        parents,
        help="one matrix report from many cells' report folders",
        description="DIR is a report folder or a folder of them (e.g. results/).",
    )
    merge.add_argument("dirs", nargs="+", metavar="DIR")
    merge.add_argument(
        "--out", metavar="DIR", default="results/matrix", help="default: results/matrix"
    )
    merge.add_argument("--sign", metavar="KEY", help="sign the matrix report with this SSH key")

    sign = add_command(
        verbs, "sign", sign_cmd, parents, help="sign a report folder with an SSH key"
    )
    sign.add_argument("dir", metavar="DIR")
    sign.add_argument("--key", required=True, metavar="KEY", help="SSH private key file")

    diff = add_command(
        verbs,
        "diff",
        diff_cmd,
        parents,
        help="compare two cell reports: regressions, fixes, waivers, coverage, machines",
        description="Regressions (passed in A, failed in B) first, then fixes, newly waived "
        "tests, per-capability counts and fingerprint differences. Exit 1 on any regression, "
        "2 when A or B is not a cell report or their schema versions differ.",
    )
    diff.add_argument(
        "a", metavar="A", help="the earlier report folder (the baseline), or a folder of them"
    )
    diff.add_argument("b", metavar="B", help="the later report folder, or a folder of them")
    diff.add_argument(
        "--format",
        choices=("text", "json", "markdown"),
        default="text",
        help="markdown: for a pull request comment (default: text)",
    )

    build = add_command(
        verbs,
        "build",
        build_cmd,
        parents,
        help="make a report from a folder holding a cell's junit.xml (e.g. after harness run)",
    )
    build.add_argument("dir", metavar="DIR")
    build.add_argument(
        "--cell", help="the cell the JUnit XML came from (default: its suite name, the cell's)"
    )
    build.add_argument(
        "--waivers", metavar="FILE", help="waivers TOML to apply (default: the cell's `waivers`)"
    )


def verify_cmd(args) -> int:
    from harness.report import bundle

    status = 0
    for folder in args.dirs:
        found = bundle.verify(folder, args.allowed_signers, args.identity)
        report = bundle.load(folder)
        name = report["cell"]["name"] if report.get("kind") == "cell" else "matrix"
        what = (
            f"({name}, verdict {report['verdict']}, sha256 {report['integrity']['sha256'][:16]}...)"
        )
        if found.verified:
            print(f"{folder}: OK {what}")
        elif found.ok and args.integrity_only:
            print(f"{folder}: OK, integrity only {what}")
        elif found.ok:
            status = status or 3
            print(
                f"{folder}: UNVERIFIED {what}: the files are intact, but without "
                "--allowed-signers nothing proves who made them (--integrity-only accepts that)",
                file=sys.stderr,
            )
        else:
            status = 1
            head = f"{folder}: MODIFIED ({name}): {len(found.problems)} problem(s)"
            print_problems(head, found.problems)
        for note in found.notes:
            print(f"  {note}")
    return status


def merge_cmd(args) -> int:
    from harness.report import bundle, merge

    folders = merge.find_reports(args.dirs)
    out = Path(args.out).resolve()
    folders = [f for f in folders if f.resolve() != out]  # a rerun must not merge its own output
    if not folders:
        raise UsageError("no cell report folders to merge; run `harness certify CELL` first.")
    report, problems = merge.merge(folders)
    if problems:
        print_problems("harness: refusing to merge edited reports:", problems)
        return 1
    bundle.write(args.out, report)
    if args.sign:
        bundle.sign(args.out, args.sign)
    print(
        f"harness: merged {len(folders)} cells, verdict {report['verdict']}: "
        f"{Path(args.out) / 'report.html'}"
    )
    return 0 if report["verdict"] == "pass" else 1


def diff_cmd(args) -> int:
    import json

    from harness.report import diff

    found = diff.compare_paths(args.a, args.b)
    if args.format == "json":
        print(json.dumps(found, indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(diff.render(found, args.format))
    return 1 if found["regressed"] else 0


def sign_cmd(args) -> int:
    from harness.report import bundle

    found = bundle.verify(args.dir)
    if not found.ok:
        print_problems(f"harness: {args.dir} was edited; refusing to sign it:", found.problems)
        return 1
    print(f"harness: signed {bundle.sign(args.dir, args.key)}")
    return 0


def build_cmd(args) -> int:
    from harness import pipeline
    from harness.matrix import load_matrix
    from harness.report import bundle, waivers

    folder = Path(args.dir)
    matrix = load_matrix(args.matrix)
    # the JUnit's suite is named after its cell (`harness run` sets it): --cell overrides
    cell = matrix.cell(args.cell or pipeline.cell_of_results(folder))
    command = ["harness", "report", "build", args.dir, "--cell", cell.name]
    command += ["--matrix", args.matrix] if args.matrix else []
    command += ["--waivers", args.waivers] if args.waivers else []
    report = pipeline.build_report(
        cell,
        matrix,
        folder,
        command=command,
        pytest_args=list(args.passthrough),
        known=waivers.for_cell(cell, args.waivers),
        fingerprint=pipeline.taken_fingerprint(folder),
    )
    bundle.write(folder, report)
    print(f"harness: {cell.name}: verdict {report['verdict']}: {folder / 'report.html'}")
    return 0 if report["verdict"] == "pass" else 1
