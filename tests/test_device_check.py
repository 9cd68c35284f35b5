"""bench/device_check.sh: its CPU mode runs every step for real; bad input is one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "device_check.sh"
STEPS = ["install", "cpu-1rank", "cpu-8sim", "threads-4", "certify"]


def _run(*args: str, budget: int = 1500, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEVICE_CHECK_BUDGET": str(budget)}
    return subprocess.run(
        ["bash", str(SCRIPT), "--python", sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.mark.slow
def test_cpu_mode_runs_every_step_into_one_folder(tmp_path):
    out = tmp_path / "check"
    # one cheap test per pytest step keeps this a check of the script, not of the suite
    result = _run("--cpu", "--out", str(out), "-k", "all_reduce_sum or ranks_share_the_device")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split("\t") for line in (out / "summary.tsv").read_text().splitlines()]
    assert [r[0] for r in rows] == STEPS
    assert all(r[1] == "passed" and r[2] == "0" for r in rows), rows
    for step in STEPS[1:]:
        junit = (out / step / "junit.xml").read_text()
        assert 'failures="0"' in junit and 'errors="0"' in junit, step
        assert 'tests="0"' not in junit, f"{step} ran no test"
    for name in ("report.json", "report.md", "report.html", "SHA256SUMS"):
        assert (out / "certify" / name).is_file(), name
    assert "torch " in (out / "env.txt").read_text()


def test_cuda_mode_on_a_host_without_cuda_refuses_before_any_step(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    out = tmp_path / "check"
    result = _run("--out", str(out), timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sees no CUDA device" in lines[0] and "--cpu" in lines[0]
    assert not (out / "summary.tsv").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--bogus"], "unknown argument '--bogus'; see --help"),
        (["--wheels", "/nonexistent/wheels"], "--wheels /nonexistent/wheels is not a folder"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(args, says):
    result = _run(*args, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"device_check: {says}"


def test_a_missing_python_is_named():
    result = subprocess.run(
        ["bash", str(SCRIPT), "--python", "/nonexistent/python3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "no Python '/nonexistent/python3'" in result.stderr


def test_a_python_that_cannot_build_the_kit_offline_is_named_before_any_step(tmp_path):
    """A stock venv (setuptools 65.5 on Python 3.11, no wheel) fails the offline editable
    install with "invalid command 'bdist_wheel'": the check says so in one line first."""
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    result = subprocess.run(
        ["bash", str(SCRIPT), "--python", str(venv / "bin" / "python"), "--cpu",
         "--out", str(tmp_path / "check")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "setuptools >= 70.1 (or >= 68 with wheel)" in lines[0], lines
    assert "--wheels DIR" in lines[0]
    assert not (tmp_path / "check" / "summary.tsv").exists()


def test_ranks_beyond_the_devices_share_them_round_robin(monkeypatch):
    """The device check's threads step: world size 4 on one GPU binds every rank to GPU 0."""
    pytest.importorskip("torch")
    from harness import bases, devices

    bound = []
    monkeypatch.setattr(devices, "host_device_count", lambda device_type: 1)
    monkeypatch.setattr(devices, "bind_device", lambda device_type, i: bound.append(i))
    for rank in range(4):
        bases._bind_device("cuda", rank)
    assert bound == [0, 0, 0, 0]
    monkeypatch.setattr(devices, "host_device_count", lambda device_type: 2)
    bases._bind_device("cuda", 3)
    assert bound[-1] == 1
