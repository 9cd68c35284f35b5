"""One certification run of a cell: its suites (and PyTorch's, with ``--upstream``)
under pytest with live progress, then the report built from the JUnit.

The library side of ``harness certify``: the command parses, checks its input,
takes the results folder's lock and prints; everything between is here.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import lifelines, pipeline, references, upstream
from harness.errors import UsageError
from harness.matrix import Cell, Matrix

# Files a previous run left that a new run must not be mistaken for.
STALE = (
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
    "reference.toml",
    ".reference-own",
)


def run(
    cell: Cell,
    matrix: Matrix,
    out: Path,
    held: int,
    *,
    ops: str,
    passthrough: list[str],
    command: list[str],
    known=None,
    upstream_dir: str | None = None,
    upstream_only: bool = False,
    verbose: bool = False,
    reference_file: str | None = None,
) -> tuple[dict | None, int]:
    """Run the cell's certification into ``out``: (the report, pytest's combined exit code).

    The report is None when pytest wrote no JUnit XML (see ``out/pytest.log``); a run
    that certifies nothing it claims to is a UsageError, and no report is made.
    ``held`` is the folder lock's descriptor, inherited by pytest. The ops are judged
    against a reference (:mod:`harness.references`): ``reference_file``, else the
    shipped record, the user cache, or one computed here after the run.
    """
    use = references.plan(cell, reference_file)  # a bad --reference stops before the run
    for name in STALE:
        (out / name).unlink(missing_ok=True)

    if not upstream_only and not pipeline.explicit_targets(passthrough):
        suite_capabilities(cell)  # a suite that is nowhere, or two modules for one row: refuse now
    started = time.monotonic()
    ops_args = ["--harness-ops", ops, *passthrough]
    with tempfile.TemporaryDirectory(prefix="harness-upstream-") as work:
        runs = [] if upstream_only else [_suite_run(cell, out, ops_args, use)]
        print(f"harness: reference: {use.describe()}", flush=True)
        prepared = upstream.prepare(upstream_dir, work) if upstream_dir else None
        if prepared is not None:
            runs.append(_upstream_run(cell, out, prepared, passthrough))
        code = _run_suite(cell, out, runs, verbose, held, matrix.path)
        if prepared is not None and (out / _UPSTREAM_XML).is_file():
            upstream.merge_junit(out / "junit.xml", out / _UPSTREAM_XML)
            (out / _UPSTREAM_XML).unlink()
    (out / _OWN_FILE).unlink(missing_ok=True)
    if not (out / "junit.xml").is_file():
        return None, code
    use = _settle(use, cell, out)
    wall = time.monotonic() - started

    report = pipeline.build_report(
        cell,
        matrix,
        out,
        command=command,
        pytest_args=passthrough,
        exit_code=code,
        wall=wall,
        known=known,
        upstream_info=prepared.to_dict() if prepared is not None else None,
        fingerprint=pipeline.taken_fingerprint(out),
        reference_use=use,
    )
    empty = certifies_nothing(cell, report, passthrough, suites=not upstream_only)
    if empty:  # no report: a folder that verifies must certify something
        raise UsageError(f"certify {cell.name}: {empty}; see {out / 'pytest.log'}")
    return report, code


def _settle(use: references.Use, cell: Cell, out: Path) -> references.Use:
    """The reference made to know every op this run failed (computed and cached if needed)."""
    from harness.report import junit

    results = junit.parse(out / "junit.xml")
    before = use.source
    use = references.settle(use, results, timeout=cell.timeout)
    if use.source != before or use.note:
        print(f"harness: reference: {use.note or use.describe()}", flush=True)
    return use


_UPSTREAM_XML = ".junit-upstream.xml"
_OWN_FILE = ".reference-own"
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
    ran = {c["name"] for c in report["capabilities"] if c["tests"]}
    if not ran:
        return f"no tests ran from its suites ({', '.join(cell.suites)}): nothing is certified"
    if (
        not suites
        or pipeline.explicit_targets(extra)
        or any(a.split("=", 1)[0] in _SELECTING for a in extra)
    ):
        return None
    for name, (_suite, module) in suite_capabilities(cell).items():
        if name not in ran:
            return f"capability {name!r} ({module}) collected no tests"
    return None


def suite_capabilities(cell: Cell) -> dict[str, tuple[str, Path]]:
    """Each capability the cell's suites hold: name -> (the suite, its module file).

    A capability is one module, named for it (``test_flip.py`` -> ``flip``) wherever
    the suite lives; a suite with no test module, or two modules that would share
    one row, is a matrix error (one UsageError line naming both).
    """
    from harness.report import capabilities

    found: dict[str, tuple[str, Path]] = {}
    for suite in cell.suites:
        path = pipeline.suite_path(cell, suite)
        modules = [path] if path.is_file() else _test_modules(path)
        if not modules:
            raise UsageError(
                f"suite {suite!r} holds no test modules (test_*.py): fix `suites` in the matrix"
            )
        for module in modules:
            name = capabilities.from_path(str(module))
            if name in found and found[name][1].resolve() != module.resolve():
                raise UsageError(
                    f"cell {cell.name}: {found[name][1]} and {module} would both be capability "
                    f"{name!r} (a capability is one module, named for it): rename one"
                )
            found[name] = (suite, module)
    return found


def _test_modules(folder: Path) -> list[Path]:
    found = [*folder.rglob("test_*.py"), *folder.rglob("*_test.py")]
    return sorted(p for p in found if "__pycache__" not in p.parts)


def _suite_run(
    cell: Cell, out: Path, extra: list[str], use: references.Use | None = None
) -> tuple[list[str], str | None, dict]:
    """The cell's suites: (argv, cwd, extra environment)."""
    env = {"HARNESS_OPS_VERDICTS": "raw"}  # every op as it ran (test_ops); the report judges it
    world = use.record.at(cell.world_size) if use and use.record else None
    if world is not None:  # progress shows DTensor's own failures as such, not as FAIL
        own = out / _OWN_FILE
        own.write_text("".join(f"{op}\n" for op in sorted(world.own)), encoding="utf-8")
        env["HARNESS_REFERENCE_OWN"] = str(own.resolve())
    return (
        pipeline.pytest_argv(cell, out, ["-p", "harness.report.pytest_progress", *extra]),
        None,
        env,
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
                preexec_fn=lifelines.die_with_parent,
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
                preexec_fn=lifelines.die_with_parent,
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


def rerun_command(
    cell: Cell,
    test_id: str,
    matrix: str | None,
    upstream_dir: str | None = None,
    out=None,
    op: str = "",
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
    ops = ["--harness-ops", op] if op else []  # the ops capability is off in `harness run`
    return shlex.join([*command, "--", *ops, "-k", " and ".join(parts)])
