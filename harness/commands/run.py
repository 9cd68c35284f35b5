"""``harness run CELL [-- pytest args]``: one cell's suites under pytest.

The cell reaches the harness as HARNESS_* environment variables, so it crosses
into rank processes and containers unchanged. JUnit XML lands in the cell's
results folder.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from harness import hosts, lock
from harness.commands import launchers
from harness.errors import UsageError
from harness.matrix import Cell, load_matrix


def add_parser(sub, parents) -> None:
    parser = sub.add_parser("run", parents=parents, help="run one cell's suites with pytest")
    parser.add_argument("cell", help="cell name, with or without its test- prefix")
    parser.add_argument("--results", metavar="DIR", help="results folder (default: the cell's)")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    add_wait_argument(parser)
    launchers.add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    matrix = load_matrix(args.matrix)
    cell = matrix.cell(args.cell)
    results = Path(args.results) if args.results else cell.results_dir
    argv = pytest_argv(cell, results, args.passthrough)
    env = {**cell.harness_env(), "HARNESS_MATRIX": str(matrix.path.resolve())}
    if launchers.wanted(args):  # torchrun / Slurm ranks: see harness/commands/launchers.py
        return launchers.run(args, cell, results, env)
    if args.dry_run:
        print(" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(argv))
        return 0
    check_host(cell)
    with lock.hold(results, f"harness run {cell.name}", wait_for(args)) as held:
        print(
            f"harness: {cell.name} (matrix {matrix.path}): {cell.world_size} ranks, "
            f"{cell.mode} mode, {cell.device}/{cell.backend}; JUnit XML -> {results / 'junit.xml'}",
            flush=True,
        )
        # pytest inherits the lock: the folder stays taken while it runs, even if we die
        child = subprocess.Popen(
            argv, env={**os.environ, **env}, pass_fds=(held,), preexec_fn=die_with_parent
        )
        try:
            return child.wait()
        except KeyboardInterrupt:  # the child got the same SIGINT; let it clean up its ranks
            child.wait()
            raise


def die_with_parent() -> None:
    """In pytest, before exec: end when `harness run`/`certify` ends, even by SIGKILL
    (its ranks and fork server follow it: harness.ranks.spawn)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def add_wait_argument(parser) -> None:
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


def pytest_argv(cell: Cell, results: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        *suite_paths(cell, extra),
        f"--junitxml={results / 'junit.xml'}",
        "-o",
        f"junit_suite_name={cell.name}",
        *extra,
    ]


def explicit_targets(extra: list[str]) -> list[str]:
    """Test ids or paths among the pytest arguments (``path::Class::test``, ``tests/x.py``)."""
    return [a for a in extra if not a.startswith("-") and ("::" in a or Path(a).exists())]


def suite_paths(cell: Cell, extra: list[str] = ()) -> list[str]:
    """A suite is a path (relative to the matrix file) or an importable package.

    Targets given after ``--`` replace the suites, so the rerun line a failure
    prints (``harness run CELL -- path::Class::test``) runs that one test.
    """
    if explicit_targets(list(extra)):
        return []
    paths = []
    for suite in cell.suites:
        candidate = Path(cell.root) / suite
        if candidate.exists():
            paths.append(str(candidate))
            continue
        spec = None if "/" in suite else _find_spec(suite)
        if spec is None or not spec.submodule_search_locations:
            raise UsageError(
                f"cell {cell.name}: suite {suite!r} is neither a path under {cell.root} "
                f"nor an importable package; fix `suites` in the matrix."
            )
        paths.append(next(iter(spec.submodule_search_locations)))
    return paths


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def torch_missing() -> str | None:
    """Why this Python cannot run any cell (torch is not importable), else None."""
    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a broken or blocked torch
        found = False
    return None if found else f"torch is not installed in {sys.executable}"


def check_host(cell: Cell) -> None:
    """Refuse, before anything starts, a cell this host cannot serve (harness.hosts)."""
    missing = torch_missing()  # the cell runs here, under this Python: it needs torch
    if missing:
        raise UsageError(
            f"cell {cell.name} cannot run: {missing}; install it: "
            f"{shlex.join(['pip', 'install', cell.torch, *cell.pip_args])}"
        )
    hosts.preflight(cell)  # plugins, device type, backend: the accelerator itself first
    hosts.check_cell(cell)
