"""nox sessions, generated from matrix.toml: no logic of its own.

nox --list                  every session
nox -s test-cpu-4rank       one cell (in its container when an engine answers)
nox -t sim                  every LocalTensor cell
nox -s tests lint           the kit's own tests and linters
nox -s slow                 the kit's slow tests (wheel, containers, venvs, the CI run)
"""

import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent))  # nox runs outside the test venv

from harness.nox_sessions import define_sessions, ensure_dev_venv  # noqa: E402

# Bare `nox` runs the kit's own checks, not every cell of every accelerator, and
# `nox --list` marks just those; `--json` emits every session, for CI matrices
# (nox's JSON listing holds only the selected ones).
if "--json" not in sys.argv:
    nox.options.sessions = ["lint", "tests"]

define_sessions("matrix.toml")


@nox.session(python=False)
def tests(session):
    """The kit's own test suite (CPU, torch 2.13.0)."""
    python = ensure_dev_venv(session)
    session.run(python, "-m", "pytest", "tests", *session.posargs, external=True)


@nox.session(python=False)
def slow(session):
    """The kit's slow tests: the wheel, containers, pip and venvs, certifications, the CI run."""
    python = ensure_dev_venv(session)
    session.run(python, "-m", "pytest", "tests", "-m", "slow", *session.posargs, external=True)


@nox.session(python=False)
def lint(session):
    """ruff, the import contracts of .importlinter, and hadolint on the Dockerfiles."""
    python = ensure_dev_venv(session)
    session.run(python, "-m", "ruff", "check", ".", external=True)
    session.run(python, "-m", "ruff", "format", "--check", ".", external=True)
    session.run(str(Path(python).parent / "lint-imports"), "--no-cache", external=True)
    session.run(
        str(Path(python).parent / "hadolint"),
        *sorted(map(str, Path("docker").glob("*.Dockerfile"))),
        external=True,
    )
