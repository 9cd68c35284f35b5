"""The pytest plugin: options become the HARNESS_* environment; failures say how to rerun."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent("""
    import os

    def test_env():
        print("ENV", {k: v for k, v in sorted(os.environ.items()) if k.startswith("HARNESS_")})

    def test_fails():
        assert os.environ.get("HARNESS_PROBE_FAIL") != "1", "planted failure"
""")


def _no_local_tensor() -> str | None:
    from harness import compat

    return compat.local_tensor_missing()


def pytest_run(tmp_path: Path, *args: str, env: dict | None = None):
    (tmp_path / "test_probe.py").write_text(PROBE)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", "test_probe.py", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


def test_options_set_the_environment_and_the_header(tmp_path):
    proc = pytest_run(
        tmp_path,
        "--harness-mode",
        "local",
        "--harness-world-size",
        "16",
        "--harness-timeout",
        "30",
        "-k",
        "env",
        "-rs",
    )
    assert proc.returncode == 0, proc.stdout
    assert "harness: cell=- " in proc.stdout and "world_size=16" in proc.stdout
    if _no_local_tensor():  # torch < 2.10: local mode reached the run as its one skip
        assert "LocalTensor mode needs torch >= 2.10" in proc.stdout, proc.stdout
        return
    assert "'HARNESS_MODE': 'local'" in proc.stdout
    assert "'HARNESS_WORLD_SIZE': '16'" in proc.stdout


def test_options_override_what_harness_run_set(tmp_path):
    proc = pytest_run(
        tmp_path,
        "--harness-world-size",
        "2",
        "-k",
        "env",
        env={"HARNESS_WORLD_SIZE": "4", "HARNESS_MODE": "native"},
    )
    assert "'HARNESS_WORLD_SIZE': '2'" in proc.stdout
    assert "'HARNESS_MODE': 'native'" in proc.stdout


def test_cell_option_applies_a_matrix_cell(tmp_path):
    proc = pytest_run(
        tmp_path,
        "--harness-cell",
        "test-cpu-8sim",
        "--harness-matrix",
        str(ROOT / "matrix.toml"),
        "-k",
        "env",
        "-rs",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if _no_local_tensor():  # torch < 2.10: the sim cell reached the run as its one skip
        assert "cell cpu-8sim: LocalTensor mode needs torch >= 2.10" in proc.stdout, proc.stdout
        return
    assert "'HARNESS_CELL': 'cpu-8sim'" in proc.stdout
    assert "'HARNESS_MODE': 'local'" in proc.stdout


def test_unknown_cell_is_a_usage_error(tmp_path):
    proc = pytest_run(
        tmp_path, "--harness-cell", "cpu-3rank", "--harness-matrix", str(ROOT / "matrix.toml")
    )
    assert proc.returncode == 4  # pytest's usage-error exit code
    assert "unknown cell 'cpu-3rank'" in proc.stderr


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("HARNESS_TIMEOUT", "abc", "the timeout must be a number of seconds, e.g. 300"),
        ("HARNESS_WORLD_SIZE", "-3", "the world size must be a whole number >= 1"),
    ],
)
def test_a_bad_cell_variable_is_one_usage_line_not_an_error_per_test(tmp_path, var, value, says):
    # issue 26: HARNESS_TIMEOUT=abc used to fail every test with a ValueError
    proc = pytest_run(tmp_path, env={var: value})
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage-error exit code
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"ERROR: {var}={value!r}: {says}."], proc.stderr
    assert "passed" not in proc.stdout and "ValueError" not in proc.stdout + proc.stderr


def test_a_failure_ends_with_the_command_that_reruns_it_in_the_same_cell(tmp_path):
    proc = pytest_run(
        tmp_path,
        "--harness-cell",
        "cpu-2rank",
        "--harness-matrix",
        str(ROOT / "matrix.toml"),
        env={"HARNESS_PROBE_FAIL": "1"},
    )
    assert proc.returncode == 1
    assert "planted failure" in proc.stdout
    assert "harness: rerun just this test" in proc.stdout
    assert "pytest test_probe.py::test_fails --harness-cell cpu-2rank" in proc.stdout


def test_under_a_launcher_the_rerun_line_is_the_launch_command(tmp_path):
    prefix = "harness run cpu-4rank --launcher torchrun --nnodes 2 --rdzv-endpoint h:1"
    proc = pytest_run(tmp_path, env={"HARNESS_PROBE_FAIL": "1", "HARNESS_RERUN": prefix})
    assert f"{prefix} -- test_probe.py::test_fails" in proc.stdout
