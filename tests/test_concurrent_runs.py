"""Two runs of one cell into one results folder: the second refuses naming the first,
or waits for it with --wait; neither overwrites the other's files (issue 16, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import lock
from harness.cli import main
from harness.errors import UsageError

MATRIX = Path(__file__).parent / "data" / "certify" / "matrix.toml"

BLOCKING_SUITE = """
import os, time
from pathlib import Path

def test_waits_for_go():
    go = Path(os.environ["GO_FILE"])
    Path(os.environ["STARTED_FILE"]).write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert go.exists()
"""


@pytest.fixture
def blocking_matrix(tmp_path) -> Path:
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "test_block.py").write_text(BLOCKING_SUITE)
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(
        'schema = 1\n[defaults]\nsuites = ["suite"]\nresults = "results"\n'
        '[accelerators.cpu]\ndevice = "cpu"\nbackend = "gloo"\ncells = { native = [1] }\n'
    )
    return matrix


def _run(matrix: Path, *extra: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "GO_FILE": str(matrix.parent / "go"),
        "STARTED_FILE": str(matrix.parent / "started"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "cpu-1rank", "--matrix", str(matrix), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=matrix.parent,
    )


def _until(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_second_run_refuses_naming_the_first_then_waits_with_wait(blocking_matrix):
    tmp = blocking_matrix.parent
    first = _run(blocking_matrix)
    waiter = None
    try:
        _until(lambda: (tmp / "started").exists(), "the first run's test to start")
        second = _run(blocking_matrix)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, lines
        assert f"in use by pid {first.pid} (harness run cpu-1rank)" in lines[0]
        assert "--wait" in lines[0]

        waiter = _run(blocking_matrix, "--wait")
        _until(lambda: waiter.stdout.readline().startswith("harness: waiting for pid"), "waiting")
        assert first.poll() is None and waiter.poll() is None
        (tmp / "go").write_text("")
        assert first.wait(timeout=120) == 0
        assert waiter.wait(timeout=120) == 0
    finally:
        for proc in (first, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert (tmp / "results" / "cpu-1rank" / "junit.xml").is_file()


def test_certify_refuses_a_folder_another_run_holds(tmp_path, capsys):
    out = tmp_path / "report"
    with lock.hold(out, "harness certify cpu-1rank"):
        code = main(["certify", "cpu-1rank", "--matrix", str(MATRIX), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"in use by pid {os.getpid()} (harness certify cpu-1rank)" in err[0]
    assert sorted(p.name for p in out.iterdir()) == [lock.LOCK]  # nothing of a report started


def test_the_lock_dies_with_its_holder(tmp_path):
    code = f"from harness import lock; import time\nwith lock.hold({str(tmp_path)!r}, 'x'):\n"
    code += "    print('held', flush=True); time.sleep(600)\n"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match=f"in use by pid {holder.pid}"):
            with lock.hold(tmp_path, "y"):
                pass
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        holder.wait(timeout=30)
        with lock.hold(tmp_path, "y", wait=10):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
