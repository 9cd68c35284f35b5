"""A test that needs docker, nix or chromium skips saying how to get it, and fails
instead where HARNESS_REQUIRE names the tool (CI: .ci/run), so CI proves them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = "tests/test_flake.py::test_flake_nix_parses"  # marked needs("nix")


def run_without_nix(**env: str) -> subprocess.CompletedProcess:
    """pytest on TARGET with a PATH that holds only this Python: no nix there."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", TARGET, "-rsf", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": str(Path(sys.executable).parent), **env},
    )


def test_a_missing_tool_skips_with_the_way_to_get_it():
    proc = run_without_nix(HARNESS_REQUIRE="")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout and "apt-get install nix-bin" in proc.stdout


def test_harness_require_turns_that_skip_into_a_failure():
    proc = run_without_nix(HARNESS_REQUIRE="docker,nix")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 error" in proc.stdout and "skipped" not in proc.stdout  # failed in its setup
    assert "HARNESS_REQUIRE=nix, but nix is not installed" in proc.stdout


def test_an_unknown_tool_in_harness_require_stops_the_run():
    proc = run_without_nix(HARNESS_REQUIRE="nixx")
    assert proc.returncode == 4  # pytest's usage error
    assert "HARNESS_REQUIRE names nixx" in proc.stderr
