"""``harness certify CELL``: run the cell's conformance suite, write a verifiable report.

pytest's own output goes to pytest.log in the report folder; the terminal shows
progress capability by capability, then the verdicts and, for each failure, the
command that reruns just that test.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import lock, pipeline, upstream
from harness.commands import add_wait_argument, wait_for
from harness.errors import UsageError
from harness.matrix import Cell, Matrix, load_matrix
from harness.report import waivers

# Files a previous run left that a new run must not be mistaken for.
_STALE = (
    "junit.xml",
    "pytest.log",
    "report.json",
    "report.md",
    "report.html",
    "SHA256SUMS",
    "SHA256SUMS.sig",
    "waivers.toml",
    ".progress.jsonl",
    ".junit-upstream.xml",
)


def add_parser(sub, parents) -> None:
    parser = sub.add_parser(
        "certify",
        parents=parents,
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
        "-v", "--verbose", action="store_true", help="show pytest's output instead of progress"
    )
    add_wait_argument(parser)
    parser.set_defaults(handler=certify)


def certify(args) -> int:
    matrix = load_matrix(args.matrix)
    cell = matrix.cell(args.cell)
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
    if args.upstream_only and not args.upstream:
        raise UsageError("--upstream-only runs PyTorch's files: add --upstream DIR.")
    if args.upstream:
        upstream.check(args.upstream)  # not a DTensor test folder: stop before anything runs
    pipeline.check_host(cell)
    # one certify per folder: a second one would delete and overwrite this one's files
    with lock.hold(out, f"harness certify {cell.name}", wait_for(args)) as held:
        return _certify(cell, matrix, out, held, args, known)


def _certify(cell: Cell, matrix: Matrix, out: Path, held: int, args, known) -> int:
    for name in _STALE:
        (out / name).unlink(missing_ok=True)

    started = time.monotonic()
    ops_args = ["--harness-ops", args.ops, *args.passthrough]
    with tempfile.TemporaryDirectory(prefix="harness-upstream-") as work:
        runs = [] if args.upstream_only else [_suite_run(cell, out, ops_args)]
        prepared = upstream.prepare(args.upstream, work) if args.upstream else None
        if prepared is not None:
            runs.append(_upstream_run(cell, out, prepared, args.passthrough))
        code = _run_suite(cell, out, runs, args.verbose, held, matrix.path)
        if prepared is not None and (out / _UPSTREAM_XML).is_file():
            upstream.merge_junit(out / "junit.xml", out / _UPSTREAM_XML)
            (out / _UPSTREAM_XML).unlink()
    wall = time.monotonic() - started
    if not (out / "junit.xml").is_file():
        _tail(out / "pytest.log")
        print(
            f"harness: certify {cell.name}: pytest wrote no JUnit XML (exit {code}); "
            f"see {out / 'pytest.log'}",
            file=sys.stderr,
        )
        return code or 2

    from harness.report import bundle

    report = pipeline.build_report(
        cell,
        matrix,
        out,
        command=_command(cell, args),
        pytest_args=args.passthrough,
        exit_code=code,
        wall=wall,
        known=known,
        upstream_info=prepared.to_dict() if prepared is not None else None,
        fingerprint=pipeline.taken_fingerprint(out),
    )
    empty = certifies_nothing(cell, report, args.passthrough, suites=not args.upstream_only)
    if empty:  # no report: a folder that verifies must certify something
        raise UsageError(f"certify {cell.name}: {empty}; see {out / 'pytest.log'}")
    bundle.write(out, report)
    if args.sign:
        bundle.sign(out, args.sign)
    _summary(cell, report, out, args)
    return 0 if report["verdict"] == "pass" else 1


_UPSTREAM_XML = ".junit-upstream.xml"
# pytest options that select a subset: then only "no test at all" is an error.
_SELECTING = ("-k", "-m", "--deselect", "--lf", "--last-failed", "--sw", "--stepwise")


def certifies_nothing(
    cell: Cell, report: dict, extra: list[str], suites: bool = True
) -> str | None:
    """Why this run certifies nothing it claims to, or None.

    No test at all is an error; so is, in a full run of the cell's suites, a
    capability module of theirs with no test in the results (a suite that resolves
    to nothing, a module whose tests were all dropped).
    """
    from harness.report import capabilities

    ran = {c["name"] for c in report["capabilities"] if c["tests"]}
    if not ran:
        return f"no tests ran from its suites ({', '.join(cell.suites)}): nothing is certified"
    if (
        not suites
        or pipeline.explicit_targets(extra)
        or any(a.split("=", 1)[0] in _SELECTING for a in extra)
    ):
        return None
    for suite, path in zip(cell.suites, pipeline.suite_paths(cell)):
        modules = [Path(path)] if Path(path).is_file() else _test_modules(Path(path))
        wanted = {capabilities.from_path(str(m)): m for m in modules}
        if not wanted:
            return f"suite {suite!r} holds no test modules (test_*.py): fix `suites` in the matrix"
        for name, module in sorted(wanted.items()):
            if name not in ran:
                return f"capability {name!r} ({module}) collected no tests"
    return None


def _test_modules(folder: Path) -> list[Path]:
    found = [*folder.rglob("test_*.py"), *folder.rglob("*_test.py")]
    return sorted(p for p in found if "__pycache__" not in p.parts)


def _suite_run(cell: Cell, out: Path, extra: list[str]) -> tuple[list[str], str | None, dict]:
    """The cell's suites: (argv, cwd, extra environment)."""
    return (
        pipeline.pytest_argv(cell, out, ["-p", "harness.report.pytest_progress", *extra]),
        None,
        {},
    )


def _upstream_run(cell: Cell, out: Path, prepared, extra: list[str]):
    """PyTorch's migrated files, in their own pytest run rooted at the temporary folder."""
    argv = [
        sys.executable,
        "-m",
        "pytest",
        *upstream.pytest_args(prepared, pipeline.explicit_targets(list(extra))),
        f"--junitxml={(out / _UPSTREAM_XML).resolve()}",
        "-o",
        f"junit_suite_name={cell.name}-upstream",
        "-p",
        "harness.report.pytest_progress",
        *extra,
    ]
    return argv, str(prepared.root), upstream.environment()


def _run_suite(
    cell: Cell, out: Path, runs: list, verbose: bool, held: int, matrix_path: Path | None = None
) -> int:
    """Run each pytest (argv, cwd, env) in turn, holding the folder's lock; one exit code."""
    from harness.report.progress import Progress
    from harness.report.pytest_progress import ENV, FINGERPRINT_ENV

    events = out / ".progress.jsonl"
    base = {
        **os.environ,
        **cell.harness_env(),
        **({"HARNESS_MATRIX": str(Path(matrix_path).resolve())} if matrix_path else {}),
        ENV: str(events.resolve()),
        FINGERPRINT_ENV: str((out / ".fingerprint.json").resolve()),
    }
    print(
        f"harness: certify {cell.name}: {cell.world_size} ranks, {cell.mode} mode, "
        f"{cell.device}/{cell.backend}; report -> {out}/",
        flush=True,
    )
    codes = []
    if verbose:
        for argv, cwd, env in runs:
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env={**base, **env},
                pass_fds=(held,),
                preexec_fn=pipeline.die_with_parent,
            )
            codes.append(_wait(popen))
        return _combined(codes)
    with open(out / "pytest.log", "wb") as log, Progress(f"certify {cell.name}") as progress:
        for argv, cwd, env in runs:
            child = subprocess.Popen(
                argv,
                cwd=cwd,
                env={**base, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(held,),
                preexec_fn=pipeline.die_with_parent,
            )
            try:
                while child.poll() is None:
                    progress.poll(events)
                    time.sleep(0.2)
            except KeyboardInterrupt:  # the child got the same SIGINT; let it reap its ranks
                child.wait()
                raise
            progress.poll(events)
            codes.append(child.returncode)
    events.unlink(missing_ok=True)
    return _combined(codes)


def _combined(codes: list[int]) -> int:
    """The worst of pytest's exit codes: a broken-off run, then failures, then none collected."""
    odd = [c for c in codes if c not in (0, 1, 5)]
    if odd:
        return odd[0]
    for code in (1, 0, 5):
        if code in codes:
            return code
    return 5


def _wait(child: subprocess.Popen) -> int:
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.wait()
        raise


def _command(cell: Cell, args) -> list[str]:
    """This run's ``harness certify`` line, as the report records it."""
    command = ["harness", "certify", cell.name]
    command += ["--matrix", args.matrix] if args.matrix else []
    command += ["--waivers", args.waivers] if getattr(args, "waivers", None) else []
    if getattr(args, "ops", None) not in (None, "all"):
        command += ["--ops", args.ops]
    if getattr(args, "upstream", None):
        command += ["--upstream", args.upstream]
        command += ["--upstream-only"] if args.upstream_only else []
    command += ["--", *args.passthrough] if args.passthrough else []
    return command


def rerun_command(
    cell: Cell, test_id: str, matrix: str | None, upstream_dir: str | None = None, out=None
) -> str:
    """The one command that reruns just this test.

    An upstream test is rerun by id in PyTorch's folder, migrated again, into a
    report folder of its own beside this one."""
    matrix_args = ["--matrix", matrix] if matrix else []
    if upstream_dir and test_id.startswith(upstream.FOLDER + "/"):
        command = ["harness", "certify", cell.name, *matrix_args, "--upstream", upstream_dir]
        command += ["--upstream-only", "--out", f"{out or cell.results_dir}-rerun"]
        return shlex.join([*command, "--", test_id])
    parts = [p.split("[", 1)[0] for p in test_id.split("::")[1:]] or [test_id]
    command = ["harness", "run", cell.name, *matrix_args]
    return shlex.join([*command, "--", "-k", " and ".join(parts)])


def _summary(cell: Cell, report: dict, out: Path, args) -> None:
    print()
    width = max((len(c["title"]) for c in report["capabilities"]), default=10)
    for cap in report["capabilities"]:
        print(
            f"  {cap['title']:<{width}}  {cap['verdict']:<4}  {cap['passed']} passed, "
            f"{cap['failed'] + cap['error']} failed, {cap['skipped']} skipped"
            + (f", {cap['waived']} waived" if cap.get("waived") else "")
        )
    failures = [
        t for c in report["capabilities"] for t in c["tests"] if t["outcome"] in ("failed", "error")
    ]
    if failures:
        print()
    for test in failures[:20]:
        print(f"  FAILED {test['id']}: {test.get('reason', '')}")
        rerun = rerun_command(cell, test["id"], args.matrix, getattr(args, "upstream", None), out)
        print(f"    rerun: {rerun}")
    if len(failures) > 20:
        print(f"  ... {len(failures) - 20} more in {out / 'report.md'}")
    for line in _waiver_lines(report):
        print(line)
    summary = report["summary"]
    waived = f", {summary['waived']} waived" if summary.get("waived") else ""
    print(
        f"\nharness: certify {cell.name}: {report['verdict'].upper()} "
        f"({summary['passed']} passed, {summary['failed'] + summary['error']} failed{waived}, "
        f"{summary['skipped']} skipped in {report['run']['wall_s']} s)"
    )
    how = "--allowed-signers FILE" if args.sign else "--integrity-only"  # unsigned: exit 3 else
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
