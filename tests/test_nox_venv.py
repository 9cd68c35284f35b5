"""A cell's venv on a torch pip cannot install: one line naming the cell and the
requirement, exit 2, and no half-made venv left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# pip against indexes that refuse or do not answer, its retries waited out (nox -s slow)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

NOXFILE = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from harness.nox_sessions import define_sessions
define_sessions("matrix.toml", install=["pytest"])
"""


def run_cell(tmp_path: Path, torch: str) -> subprocess.CompletedProcess:
    (tmp_path / "noxfile.py").write_text(NOXFILE)
    (tmp_path / "matrix.toml").write_text(
        f'schema = 1\n[defaults]\ntorch = [{torch}]\n[accelerators.cpu]\nbackend = "gloo"\n'
        "cells = { native = [2] }\n"
    )
    # only the index the matrix names: no pip config, find-links or mirror of this host
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return subprocess.run(
        [sys.executable, "-m", "nox", "-s", "test-cpu-2rank", "--", "--native"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("torch", "says"),
    [
        ('"torch==0.0.1"', "pip cannot install torch==0.0.1"),
        (
            '{ requirement = "torch==2.13.0", pip_args = ["--index-url", "http://127.0.0.1:9/simple"] }',
            "pip cannot install torch==2.13.0 --index-url http://127.0.0.1:9/simple",
        ),
    ],
    ids=["unsatisfiable", "index-does-not-answer"],
)
def test_a_torch_pip_cannot_install_is_one_line_and_no_venv(tmp_path, torch, says):
    result = run_cell(tmp_path, torch)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("nox: error: cell cpu-2rank: ") and says in errors[0]
    assert not list((tmp_path / ".nox").glob("venv-cpu-*")), "a half-made venv was left behind"
