"""The lint session's checks, in the test suite so CI enforces them too."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("ruff", reason="ruff is not installed (pip install -e '.[dev]')")


@pytest.mark.parametrize("check", [["check", "."], ["format", "--check", "."]], ids=" ".join)
def test_ruff(check):
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", *check],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_import_contracts():
    """The floors of .importlinter (docs/architecture.md): the runner never imports the bases, ..."""
    pytest.importorskip("importlinter", reason="import-linter is not installed (.[dev])")
    run = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    proc = subprocess.run(
        [sys.executable, "-c", run, "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
