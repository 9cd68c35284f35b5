"""nox sessions generated from a matrix: the whole logic behind noxfile.py.

Importable by other repositories, so their noxfile makes the same sessions from
their own matrix.toml::

    from harness.nox_sessions import define_sessions
    define_sessions("matrix.toml", install=["-e", ".[test]", "dtensor-harness"])

Torch-free: nox usually lives outside the test environment.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.matrix import Cell, MatrixError, load_matrix


def define_sessions(
    matrix_path: str | Path = "matrix.toml",
    *,
    install: Sequence[str] = ("-e", ".[test]"),
    root: str | Path = ".",
) -> list[str]:
    """Register test-<cell>, certify-<cell> and build-<accelerator> sessions."""
    import nox

    try:
        matrix = load_matrix(matrix_path)
    except MatrixError as exc:  # a noxfile import error would bury it in a traceback
        for line in str(exc).splitlines():
            print(f"nox: error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    root = Path(root).resolve()
    names = []
    for cell in matrix.cells:
        for verb in ("test", "certify"):
            name = f"{verb}-{cell.name}"
            func = _cell_session(cell, verb, str(Path(matrix_path).resolve()), root, install)
            nox.session(name=name, python=False, tags=[verb, *cell.tags])(func)
            names.append(name)
    for accelerator in matrix.accelerators:
        cell = matrix.select(accelerator)[0]
        name = f"build-{accelerator}"
        nox.session(name=name, python=False, tags=["build", accelerator])(
            _build_session(cell, str(Path(matrix_path).resolve()))
        )
        names.append(name)
    return names


def _cell_session(cell: Cell, verb: str, matrix_path: str, root: Path, install: Sequence[str]):
    def session_func(session):
        posargs = list(session.posargs)
        where = _where(cell, posargs, session)
        command = ["run" if verb == "test" else "certify", cell.name, "--matrix", matrix_path]
        if where == "container":
            from harness import containers

            session.run(*containers.session_argv(cell, command, posargs), external=True)
            return
        if os.environ.get("IN_NIX_SHELL"):  # the flake's shell already pins torch and the kit
            session.log(f"{cell.name}: using the Nix shell's Python, {sys.executable}")
            python = sys.executable
        else:
            python = ensure_venv(session, cell, root, install)
        extra = ["--", *posargs] if posargs else []
        session.run(python, "-m", "harness", *command, *extra, external=True)

    session_func.__doc__ = (
        f"{'Run' if verb == 'test' else 'Certify'} {cell.accelerator} at world size "
        f"{cell.world_size} ({cell.mode}, backend {cell.backend})"
    )
    return session_func


def _build_session(cell: Cell, matrix_path: str):
    def session_func(session):
        from harness import containers  # its checks: engine up, base image there or how to make it

        command = ["build", cell.name, "--matrix", matrix_path]
        session.run(*containers.session_argv(cell, command, session.posargs), external=True)

    session_func.__doc__ = f"Build the {cell.accelerator} image {cell.image}"
    return session_func


def _where(cell: Cell, posargs: list[str], session) -> str:
    """Container when an engine answers, native otherwise; --native/--container force it."""
    forced = [flag for flag in ("--native", "--container") if flag in posargs]
    for flag in forced:
        posargs.remove(flag)
    if len(forced) > 1:
        session.error("--native and --container exclude each other; pass one")
    from harness import containers

    engine = containers.detect_engine()
    if forced == ["--container"]:
        if engine is None:
            session.error(f"{containers.NO_ENGINE_HELP}; or drop --container to run natively")
        where = "container"
    elif forced == ["--native"] or engine is None:
        where = "native"
    else:
        where = "container"
    reason = {
        ("native", True): "forced by --native",
        ("native", False): "no container engine answered",
        ("container", True): f"forced by --container, engine {engine}",
        ("container", False): f"{engine} answered",
    }[(where, bool(forced))]
    session.log(
        f"{cell.name}: running {where}ly ({reason})"
        if where == "native"
        else f"{cell.name}: running in container {cell.image} ({reason})"
    )
    return where


def ensure_venv(session, cell: Cell, root: Path, install: Sequence[str]) -> str:
    """The virtualenv for a cell: one per accelerator and torch, shared by its cells."""
    name = f"venv-{cell.accelerator}-torch{cell.torch_tag}"
    return _venv(session, root / ".nox" / name, install_steps(cell, install), f"cell {cell.name}")


def ensure_dev_venv(session, root: str | Path = ".") -> str:
    """The virtualenv for the kit's own tests and linters (CPU torch, test and dev extras)."""
    cpu = load_matrix(Path(root) / "matrix.toml").select("cpu")[0]
    return _venv(
        session,
        Path(root).resolve() / ".nox" / "venv-dev",
        install_steps(cpu, ["-e", ".[test,dev]"]),
        "the kit's dev venv",
    )


def install_steps(cell: Cell, install: Sequence[str]) -> list[list[str]]:
    """The ``pip install`` arguments that make a cell's venv, in order.

    torch comes first, alone with the accelerator's ``pip_args`` (its wheel index:
    PyTorch's CPU or CUDA index), so an ``--index-url`` there never reaches pytest
    and the rest. The second step pins torch again, so pip keeps the build it has.
    """
    return [[cell.torch, *cell.pip_args], [cell.torch, *install]]


#: pip gives up on an index that does not answer after about a minute, not five
PIP_PATIENCE = ("--timeout", "20", "--retries", "2")


def _venv(session, venv: Path, steps: list[list[str]], what: str = "") -> str:
    """Create ``venv`` once; run pip only when its install steps changed.

    A CPU cell must not pay pip's resolution on every run, and must never pull a
    CUDA torch (see install_steps).
    """
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    stamp = hashlib.sha256("\0\0".join("\0".join(step) for step in steps).encode()).hexdigest()
    marker = venv / ".harness-installed"
    if not python.exists():
        session.run(sys.executable, "-m", "venv", str(venv), external=True)
    if marker.exists() and marker.read_text() == stamp:
        session.log(f"reusing {venv} ({' '.join(steps[-1])})")
    else:
        marker.unlink(missing_ok=True)
        for step in steps:
            _pip(session, python, venv, step, what)
        marker.write_text(stamp)
    return str(python)


def _pip(session, python: Path, venv: Path, step: list[str], what: str) -> None:
    """One pip step; if pip cannot do it, one line naming the cell and the requirement.

    The venv is removed then, so no half-made venv is mistaken for a good one.
    """
    argv = [str(python), "-m", "pip", "install", "-q", *PIP_PATIENCE, *step]
    session.log(" ".join(argv[1:]))
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return
    shutil.rmtree(venv, ignore_errors=True)
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("ERROR:")]
    why = errors[-1].removeprefix("ERROR:").strip() if errors else f"pip exited {result.returncode}"
    print(
        f"nox: error: {what}: pip cannot install {' '.join(step)}: {why}; fix its torch "
        f"requirement or index in matrix.toml (or reach the index). Removed {venv}.",
        file=sys.stderr,
    )
    raise SystemExit(2)
