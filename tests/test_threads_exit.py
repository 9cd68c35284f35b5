"""Threads mode: a rank calling os._exit, or sending itself a signal that would end
a rank process, is that rank crashing (issue 16, item 2).

Each used to end pytest itself (exit 17, or killed by the signal) with no output
at all: no verdict, no JUnit XML, no later test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

DATA = Path(__file__).parent / "data" / "ranks" / "thread_exit.py"


def test_os_exit_or_a_signal_on_a_rank_thread_is_that_ranks_crash(tmp_path):
    xml = tmp_path / "junit.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(DATA), "-p", "no:cacheprovider", "-q",
         f"--junitxml={xml}"],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    cases = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kids = [k for k in case if k.tag in ("failure", "error")]
        cases[case.get("name")] = kids[0].get("message", "") + (kids[0].text or "") if kids else ""
    assert "rank 1 crashed: exited with code 17" in cases["test_a_rank_calls_os_exit"]
    assert "rank 1 crashed: killed by SIGSEGV" in cases["test_a_rank_kills_itself_with_sigsegv"]
    assert "rank 0 crashed: killed by SIGKILL" in cases["test_a_rank_raises_sigkill"]
    assert "rank 1 crashed: killed by SIGABRT" in cases["test_a_rank_aborts_its_own_thread"]
    assert "rank 0 crashed: killed by SIGABRT" in cases["test_a_rank_calls_os_abort"]
    assert cases["test_b_later_test_runs"] == ""  # the process, and the next test, lived on


SEGFAULT = Path(__file__).parent / "data" / "ranks" / "thread_segfault.py"


def test_a_native_fault_on_a_rank_thread_still_leaves_its_verdict(tmp_path):
    """The process dies with the signal (nothing can stop that), but a watcher that
    holds its pipe writes the verdict to stderr and to the JUnit XML."""
    xml = tmp_path / "junit.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(SEGFAULT), "-p", "no:cacheprovider", "-q",
         f"--junitxml={xml}", "-o", "junit_suite_name=cpu-2rank"],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == -11, done.stdout[-2000:] + done.stderr[-2000:]
    verdict = "ThreadSegfault.test_b_rank_faults (threads mode): rank 1 crashed: killed by SIGSEGV"
    # the watcher holds pytest's stderr until it has written both: run() waited for it
    assert verdict in done.stderr, done.stderr[-3000:]
    suite = ET.parse(xml).getroot().find("testsuite")
    assert suite.get("name") == "cpu-2rank"
    (case,) = suite.iter("testcase")
    assert case.get("name") == "test_b_rank_faults"
    assert verdict in case.find("failure").get("message")
    assert "Rerun just this test: " in case.find("failure").get("message")
    assert "Fatal Python error: Segmentation fault" in case.find("failure").text
