"""One cell, from its pytest command to its results folder to its report.

The one place that knows the way: ``harness run``, ``harness certify``,
``harness report build``, the launchers (:mod:`harness.launchers`) and the
containers (:mod:`harness.containers`) all call it, so a cell's suites, its
JUnit file and its suite name (the cell's name, which ``report build`` reads
back) are worked out once. Torch-free at import: nox and ``harness --help``
load it.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import hosts
from harness.errors import UsageError

if TYPE_CHECKING:
    from harness.matrix import Cell, Matrix

#: The JUnit file in a results folder; its suite is named after the cell.
JUNIT = "junit.xml"
#: Where a launcher's rank 0 writes the merged JUnit (read by harness.ranks.external_main).
JUNIT_ENV = "HARNESS_JUNIT"


# -- the results folder ---------------------------------------------------------------
def results_folder(cell: Cell, override: str | Path | None = None) -> Path:
    """``--results DIR`` when given, else the cell's (``<matrix results>/<cell>``)."""
    return Path(override) if override else cell.results_dir


def junit_path(folder: str | Path) -> Path:
    return Path(folder) / JUNIT


def cell_of_results(folder: str | Path) -> str:
    """The cell a results folder's JUnit came from: its suite name."""
    from harness import junit

    path = junit_path(folder)
    name = junit.suite_name(path)
    if not name or name == "pytest":
        raise UsageError(
            f"{path} does not name its cell (its suite is {name!r}, pytest's default); "
            f"pass --cell NAME, or make it with `harness run CELL`."
        )
    return name


# -- the pytest command ---------------------------------------------------------------
def explicit_targets(extra: Sequence[str]) -> list[str]:
    """Test ids or paths among the pytest arguments (``path::Class::test``, ``tests/x.py``)."""
    return [a for a in extra if not a.startswith("-") and ("::" in a or Path(a).exists())]


def suite_paths(cell: Cell, extra: Sequence[str] = ()) -> list[str]:
    """Each suite's path: a folder or a file, given by path or by importable name.

    A path is absolute (``~`` expanded) or relative to the matrix file's folder
    (``cell.root``), wherever the command runs; a dotted name is an importable
    package (its folder) or module (its file). Targets given after ``--`` replace
    the suites, so the rerun line a failure prints (``harness run CELL --
    path::Class::test``) runs that one test.
    """
    if explicit_targets(list(extra)):
        return []
    return [str(suite_path(cell, suite)) for suite in cell.suites]


def suite_path(cell: Cell, suite: str) -> Path:
    """Where one suite of ``cell`` lives; one UsageError line naming the fix if nowhere."""
    candidate = Path(cell.root) / Path(suite).expanduser()
    if candidate.exists():
        return candidate
    looks_like_path = "/" in suite or "\\" in suite or suite.endswith(".py")
    spec = None if looks_like_path else _find_spec(suite)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec is not None and spec.origin and spec.origin.endswith(".py"):
        return Path(spec.origin)
    here = Path.cwd() / suite
    hint = (
        f" ({here} exists: write it relative to the matrix file, or absolute)"
        if here.exists()
        else ""
    )
    raise UsageError(
        f"cell {cell.name}: suite {suite!r} is neither a path under {cell.root} (relative "
        f"suites resolve against the matrix file's folder) nor an importable package or "
        f"module{hint}; fix `suites` in the matrix."
    )


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def pytest_args(cell: Cell, extra: Sequence[str]) -> list[str]:
    """What pytest gets for a cell, wherever it runs: suites, the suite name, ``extra``."""
    return [*suite_paths(cell, extra), "-o", f"junit_suite_name={cell.name}", *extra]


def pytest_argv(cell: Cell, results: Path, extra: Sequence[str]) -> list[str]:
    """``python -m pytest`` for a cell, writing its JUnit into ``results``."""
    return [
        sys.executable,
        "-m",
        "pytest",
        *suite_paths(cell, extra),
        f"--junitxml={junit_path(results)}",
        "-o",
        f"junit_suite_name={cell.name}",
        *extra,
    ]


def cell_env(cell: Cell, matrix: Matrix | None = None) -> dict[str, str]:
    """The variables that carry the cell into pytest, its ranks and containers."""
    env = dict(cell.harness_env())
    if matrix is not None:
        env["HARNESS_MATRIX"] = str(matrix.path.resolve())
    return env


def shell_line(env: Mapping[str, str], argv: Sequence[str]) -> str:
    """``VAR=value ... command``, as ``--dry-run`` prints it."""
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + shlex.join(argv)


# -- the host ---------------------------------------------------------------------------
def torch_missing() -> str | None:
    """Why this Python cannot run any cell (torch is not importable), else None."""
    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a broken or blocked torch
        found = False
    return None if found else f"torch is not installed in {sys.executable}"


def check_host(cell: Cell, *, ranks_here: int | None = None) -> None:
    """Refuse, before anything starts, a cell this host cannot serve (one UsageError line).

    The cell runs under this Python, so it needs torch; then the answer is
    the torch-side preflight and :func:`harness.hosts.check_cell`'s
    (``ranks_here``: the ranks a launcher runs on this node).
    """
    missing = torch_missing()
    if missing:
        raise UsageError(
            f"cell {cell.name} cannot run: {missing}; install it: "
            f"{shlex.join(['pip', 'install', cell.torch, *cell.pip_args])}"
        )
    hosts.preflight(cell)  # plugins, device type, backend: the accelerator itself first
    hosts.check_cell(cell, ranks_here=ranks_here)
    if cell.mode == "fake":  # the one torch question a fake cell adds, asked before any rank
        from harness import compat

        missing = compat.fake_group_missing()
        if missing:
            raise UsageError(f"cell {cell.name} cannot run: {missing}.")
    from harness.conformance import _ops  # stdlib only; loaded when a cell runs

    _ops.check_environment()  # HARNESS_OPS_ON, HARNESS_OPS_WORKERS


def execute(argv: Sequence[str], env: Mapping[str, str], **popen: Any) -> int:
    """Run ``argv`` with ``env`` over this environment; on Ctrl-C let it clean up first."""
    child = subprocess.Popen(list(argv), env={**os.environ, **env}, **popen)
    try:
        return child.wait()
    except KeyboardInterrupt:  # the child got the same SIGINT; let it reap its ranks
        child.wait()
        raise


# -- the report -------------------------------------------------------------------------
#: The fingerprint pytest took (same process as the tests), handed to the report.
FINGERPRINT = ".fingerprint.json"


def taken_fingerprint(folder: Path) -> dict | None:
    """The fingerprint pytest left in ``folder`` (and remove it), or None."""
    import json

    taken = folder / FINGERPRINT
    try:
        return json.loads(taken.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    finally:
        taken.unlink(missing_ok=True)


def hw_classes(cell: Cell, results: Sequence[Any]) -> dict[str, Any]:
    """Which hw_classification classes the run counted, and how many tests each left out."""
    from harness import hwclass
    from harness.outcomes import Outcome

    counted = hwclass.parse(cell.harness_env()[hwclass.ENV])
    return {
        "counted": list(counted) if counted is not None else hwclass.ALL,
        "left_out": hwclass.tally(r.reason for r in results if r.outcome == Outcome.SKIPPED),
    }


def build_report(
    cell: Cell,
    matrix: Matrix,
    folder: Path,
    *,
    command: Sequence[str],
    pytest_args: Sequence[str],
    exit_code: int | None = None,
    wall: float = 0.0,
    known: Any = None,
    upstream_info: dict | None = None,
    fingerprint: dict | None = None,
    reference_use: Any = None,
) -> dict:
    """The sealed report of a results folder holding this cell's junit.xml.

    ``command``: the one that made it; ``known``: loaded waivers (applied, and
    copied into ``folder``); ``upstream_info``: what ``--upstream`` ran (path,
    file count, tree sha256); ``fingerprint``: the one pytest took, else one
    is taken here; ``reference_use``: the reference the ops are judged against
    (:mod:`harness.references`; applied before the waivers, copied into ``folder``).
    """
    from harness.report import bundle, junit, reference, schema, waivers
    from harness.report import fingerprint as fingerprints

    results = junit.parse(junit_path(folder))  # bad input fails before torch is imported
    use = reference_use
    results, judged = reference.apply(
        use.record if use else None,
        results,
        world_size=cell.world_size,
        source=use.source if use else "",
        path=use.path if use else "",
        guards=use.guards if use else False,
        note=use.note if use else "",
    )
    reference.write(folder, use.record if use and judged and judged.get("sha256") else None)
    results, applied = waivers.apply(known, results)
    waivers.write(folder, known)
    cell_info = cell.to_dict()
    cell_info.pop("results_dir", None)
    return schema.build(
        cell=cell_info,
        matrix={"path": str(matrix.path), "sha256": bundle.file_sha256(Path(matrix.path))},
        fingerprint=fingerprint or fingerprints.collect(cell.device, cell.backend, cell.spec),
        results=results,
        run={
            "command": shlex.join(command),
            "pytest_args": list(pytest_args),
            "exit_code": exit_code,
            "wall_s": round(wall, 1),
            "hw_classes": hw_classes(cell, results),
            **({"upstream": upstream_info} if upstream_info else {}),
        },
        artifacts={JUNIT: bundle.file_sha256(junit_path(folder))},
        waivers=applied,
        reference=judged,
    )
