"""LocalTensor tests run beside pytest in side workers, from the last one back
(harness.ranks.side, harness.lanes.side_tasks).

Each scenario's tests log "<test> <pid>" to SCENARIO_LOG, so a test can say which
process ran which test, and how often. The first test holds pytest in a rank test for
a few seconds, so the side worker has time to take tests from the back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from processes import alive  # tests/ is on sys.path
from scenario_runs import pytest_argv, scenario_env

HEADER = """\
import os, sys, time, unittest, warnings
from harness import DTensorTestBase, LocalDTensorTestBase, timeout_after, with_comms


def log(name):
    with open(os.environ["SCENARIO_LOG"], "a") as f:
        f.write(f"{name} {os.getpid()}\\n")


class HoldsPytest(DTensorTestBase):
    @property
    def world_size(self):
        return 2

    @with_comms
    def test_0_ranks(self):
        time.sleep(float(os.environ.get("SCENARIO_HOLD", "3")))

"""

MIXED = (
    HEADER
    + """
class Simulated(LocalDTensorTestBase):
    @property
    def world_size(self):
        return 4

    @with_comms
    def test_1(self):
        log("test_1")

    @with_comms
    def test_2_prints(self):
        log("test_2_prints")
        print("said in test_2")
        warnings.warn("careful in test_2")

    @with_comms
    def test_3_fails(self):
        log("test_3_fails")
        self.assertEqual(self.world_size, 5, "four ranks, not five")

    @with_comms
    def test_4_raises(self):
        log("test_4_raises")
        raise RuntimeError("boom in test_4")

    @with_comms
    def test_5_skips(self):
        log("test_5_skips")
        self.skipTest("not on this host")

    @unittest.expectedFailure
    @with_comms
    def test_6_expected_failure(self):
        log("test_6_expected_failure")
        self.assertEqual(1, 2)

    @with_comms
    def test_7(self):
        log("test_7")
        time.sleep(1.0)
"""
)


def _run(project: Path, *args: str, workers: str | None = None, hold: float = 3.0):
    log = project / "ran.log"
    log.unlink(missing_ok=True)
    env = {
        **scenario_env(project / "pids"),
        "SCENARIO_LOG": str(log),
        "SCENARIO_HOLD": str(hold),
    }
    env.pop("HARNESS_SIDE_WORKERS", None)
    if workers is not None:
        env["HARNESS_SIDE_WORKERS"] = workers
    proc = subprocess.run(
        pytest_argv("-rA", *args),
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    logged = [(name, int(pid)) for name, pid in lines]
    pytest_pid = next(pid for name, pid in logged if name == "pytest")  # the conftest's line
    return proc, pytest_pid, [(name, pid) for name, pid in logged if name != "pytest"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "test_mixed.py").write_text(MIXED)
    (tmp_path / "conftest.py").write_text(
        "import os\n\n\ndef pytest_configure(config):\n"
        '    with open(os.environ.get("SCENARIO_LOG", os.devnull), "a") as f:\n'
        '        f.write(f"pytest {os.getpid()}\\n")\n'
    )
    return tmp_path


def test_the_lane_runs_local_tests_beside_a_rank_test_each_once(project: Path):
    proc, pytest_pid, ran = _run(project, "test_mixed.py", "--junitxml=j.xml", workers="1")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "2 failed, 4 passed, 1 skipped, 1 xfailed" in out, out
    names = [name for name, _ in ran]
    assert sorted(names) == sorted(set(names)), f"a test ran twice: {ran}"
    assert len(names) == 7, ran
    side = {name for name, pid in ran if pid != pytest_pid}
    # the worker takes tests from the last one back while pytest holds the rank test
    assert "test_7" in side, ran
    # its report has the time it ran in the worker, not pytest's wait for the outcome
    times = {
        c.get("name"): float(c.get("time")) for c in ET.parse(project / "j.xml").iter("testcase")
    }
    assert times["test_7"] >= 0.9, times


def test_outcomes_from_the_lane_read_as_pytest_own(project: Path):
    proc, pytest_pid, ran = _run(project, "test_mixed.py", workers="1", hold=6.0)
    out = proc.stdout
    workers = {pid for _, pid in ran}
    assert len(workers) == 1 and pytest_pid not in workers, f"held 6 s, the lane ran all: {ran}"
    # a failed assertion: pytest's failure, with the test's own message and traceback
    assert "AssertionError" in out and "four ranks, not five" in out, out
    assert "FAILED test_mixed.py::Simulated::test_3_fails" in out, out
    # an error, the skip's reason, an expected failure, and what a test printed
    assert "RuntimeError: boom in test_4" in out, out
    assert "not on this host" in out, out
    assert "XFAIL test_mixed.py::Simulated::test_6_expected_failure" in out, out
    assert "said in test_2" in out, out
    assert "UserWarning: careful in test_2" in out, out  # in pytest's warnings summary
    # a failure says where it ran and how to run it in pytest's own process
    assert "side process" in out and "HARNESS_SIDE_WORKERS=0" in out, out
    assert "Rerun just this test: pytest test_mixed.py::Simulated::test_3_fails" in out, out


def test_no_side_workers_runs_every_test_in_pytest(project: Path):
    proc, pytest_pid, ran = _run(project, "test_mixed.py", workers="0")
    assert "2 failed, 4 passed, 1 skipped, 1 xfailed" in proc.stdout, proc.stdout
    assert {pid for _, pid in ran} == {pytest_pid}, ran


def test_tests_needing_pytest_stay_in_pytest(project: Path):
    """A fixture, a pytest marker, a class's own set-up: a side worker would not see them."""
    (project / "test_mixed.py").write_text(
        HEADER
        + """
import pytest


@pytest.fixture
def tool():
    return "from pytest"


class WithFixture(LocalDTensorTestBase):
    @pytest.fixture(autouse=True)
    def _tool(self, tool):
        self.tool = tool

    def test_fixture(self):
        log("test_fixture")
        assert self.tool == "from pytest"


class WithSetUpClass(LocalDTensorTestBase):
    @classmethod
    def setUpClass(cls):
        cls.ready = True

    def test_class_set_up(self):
        log("test_class_set_up")
        assert self.ready


class WithMarker(LocalDTensorTestBase):
    @pytest.mark.skipif(False, reason="runs")
    def test_marked(self):
        log("test_marked")


class Plain(LocalDTensorTestBase):
    def test_plain_1(self):
        log("test_plain_1")

    def test_plain_2(self):
        log("test_plain_2")
"""
    )
    proc, pytest_pid, ran = _run(project, "test_mixed.py", workers="1", hold=6.0)
    assert "6 passed" in proc.stdout, proc.stdout + proc.stderr
    in_pytest = {name for name, pid in ran if pid == pytest_pid}
    assert {"test_fixture", "test_class_set_up", "test_marked"} <= in_pytest, ran
    assert "test_plain_2" not in in_pytest, f"the lane takes the last plain test: {ran}"


def test_a_hang_in_the_lane_fails_with_its_stack_and_the_lane_goes_on(project: Path):
    (project / "test_mixed.py").write_text(
        HEADER
        + """
class Hangs(LocalDTensorTestBase):
    def test_1_after(self):
        log("test_1_after")

    @timeout_after(2)
    def test_2_hangs(self):
        log("test_2_hangs")
        while True:
            time.sleep(0.1)

    def test_3_crashes(self):
        log("test_3_crashes")
        os._exit(3)

    def test_4_before(self):
        log("test_4_before")
"""
    )
    proc, pytest_pid, ran = _run(project, "test_mixed.py", workers="1", hold=12.0)
    out = proc.stdout
    assert "2 failed, 3 passed" in out, out + proc.stderr
    assert "test_2_hangs timed out after 2 s" in out and "in test_2_hangs" in out, out
    assert "exited with code 3" in out, out
    side = [pid for name, pid in ran if pid != pytest_pid]
    assert len(side) == 4 and len(set(side)) == 3, f"a new worker after each death: {ran}"
    for pid in set(side):
        assert not os.path.exists(f"/proc/{pid}"), f"side worker {pid} outlived the run"


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--harness-side-workers", "-1"], {}, "--harness-side-workers=-1: give a whole number"),
        ([], {"HARNESS_SIDE_WORKERS": "two"}, "HARNESS_SIDE_WORKERS='two': give a whole number"),
    ],
)
def test_a_bad_worker_count_is_one_line(project: Path, args, env, says):
    proc = subprocess.run(
        pytest_argv(*args, "test_mixed.py"),
        cwd=project,
        env={**scenario_env(project / "pids"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_pytest_takes_the_side_worker_down(project: Path):
    (project / "test_mixed.py").write_text(
        HEADER
        + """
class Sleeps(LocalDTensorTestBase):
    def test_1(self):
        log("test_1")

    def test_2_sleeps(self):
        log("test_2_sleeps")
        time.sleep(120)
"""
    )
    log = project / "ran.log"
    env = {**scenario_env(project / "pids"), "SCENARIO_LOG": str(log), "SCENARIO_HOLD": "120"}
    env["HARNESS_SIDE_WORKERS"] = "1"
    proc = subprocess.Popen(pytest_argv("test_mixed.py"), cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    worker = None
    try:
        deadline = time.monotonic() + 120
        while worker is None:
            assert proc.poll() is None and time.monotonic() < deadline, "no side worker ran"
            lines = log.read_text().split("\n") if log.exists() else []
            worker = next((int(line.split()[1]) for line in lines if "test_2_sleeps" in line), None)
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        end = time.monotonic() + 5.0  # docs/guarantees.md's promise
        while alive(worker) and time.monotonic() < end:
            time.sleep(0.05)
        assert not alive(worker), "the side worker outlived pytest's SIGKILL by 5 s"
    finally:
        if worker is not None and alive(worker):
            os.kill(worker, signal.SIGKILL)
        proc.kill()
        proc.wait(timeout=30)
