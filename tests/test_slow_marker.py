"""`pytest` is the everyday loop: tests marked slow (they prove the machine: the wheel,
containers, venvs, certifications, the CI run) are deselected by pyproject's addopts,
and the summary says how many and how to run them; `-m slow` runs just those."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLOW_FILE = "tests/test_wheel.py"  # every test in it is marked slow


def pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", SLOW_FILE, "-p", "no:randomly", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def slow_ids() -> list[str]:
    listed = pytest("--collect-only", "-q", "-m", "slow")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return [line for line in listed.stdout.splitlines() if line.startswith(SLOW_FILE + "::")]


def test_the_default_run_deselects_them_and_says_how_to_run_them():
    ids = slow_ids()
    assert len(ids) >= 2, ids
    proc = pytest("-q")
    assert proc.returncode == 5, proc.stdout + proc.stderr  # pytest: no test ran
    assert f"{len(ids)} slow tests deselected" in proc.stdout, proc.stdout
    assert "pytest -m slow" in proc.stdout and "nox -s slow" in proc.stdout


def test_the_line_is_there_under_xdist_too():
    proc = pytest("-q", "-n", "2")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert f"{len(slow_ids())} slow tests deselected" in proc.stdout, proc.stdout
