"""Failure modes of the rank runner, at world sizes 1, 2 and 4: process, pool and threads.

tests/data/ranks/scenarios.py is run once in a pytest subprocess (it must fail);
each test here reads one scenario's outcome from its JUnit XML and checks what a
user relies on: the verdict, the rank and cause named, the rerun command, and
that no rank process outlived its test.
"""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from scenario_runs import pytest_argv, scenario_env  # tests/ is on sys.path

SCENARIOS = Path(__file__).parent / "data" / "ranks" / "scenarios.py"
KINDS = ("Proc", "Pool", "Thr")
SIZES = (1, 2, 4)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scenarios")
    pids = tmp / "pids"
    pids.mkdir()
    xml = tmp / "junit.xml"
    proc = subprocess.run(
        pytest_argv(str(SCENARIOS), f"--junitxml={xml}", "-o", "junit_family=xunit1"),
        env=scenario_env(pids),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parent.parent,
    )
    results = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        key = f"{case.get('classname').split('.')[-1]}.{case.get('name')}"
        status, text = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                status = "skipped" if child.tag == "skipped" else "failed"
                text = f"{child.get('message') or ''}\n{child.text or ''}"
        results[key] = (status, text)
    return {"results": results, "pids": pids, "output": proc.stdout + proc.stderr}


def ranks_named(text: str) -> set[int]:
    """Every rank the message names, in "rank 3" or "ranks 0, 1, 2"."""
    found = set()
    for group in re.findall(r"\branks? ((?:\d+, )*\d+)", text):
        found.update(int(n) for n in group.split(", "))
    return found


def outcome(run, cls, test):
    key = f"{cls}.{test}"
    assert key in run["results"], f"{key} did not run:\n{run['output'][-3000:]}"
    return run["results"][key]


def assert_failed(run, cls, test, *needles):
    status, text = outcome(run, cls, test)
    assert status == "failed", f"{cls}.{test} should fail, got {status}"
    for needle in (
        *needles,
        f"Rerun just this test: pytest {SCENARIOS.relative_to(Path.cwd()) if SCENARIOS.is_relative_to(Path.cwd()) else SCENARIOS}::{cls}::{test}",
    ):
        assert needle in text, f"{needle!r} missing from the message of {cls}.{test}:\n{text}"
    return text


CASES = [(kind, ws) for kind in KINDS for ws in SIZES]
IDS = [f"{kind.lower()}-ws{ws}" for kind, ws in CASES]


@pytest.mark.parametrize(("kind", "ws"), CASES, ids=IDS)
def test_passing_test_passes(run, kind, ws):
    assert outcome(run, f"{kind}{ws}", "test_pass")[0] == "passed"


@pytest.mark.parametrize(("kind", "ws"), CASES, ids=IDS)
def test_exception_on_one_rank_names_rank_and_cause(run, kind, ws):
    last = ws - 1
    text = assert_failed(
        run,
        f"{kind}{ws}",
        "test_exception_on_one_rank",
        f"rank {last} failed: ValueError: boom on rank {last}",
        'raise ValueError(f"boom on rank {self.rank}")',
    )
    if ws > 1:  # the others are accounted for: stopped with their stack, or their own error
        assert set(range(ws)) <= ranks_named(text)


@pytest.mark.parametrize(("kind", "ws"), CASES, ids=IDS)
def test_assertion_on_one_rank(run, kind, ws):
    assert_failed(
        run,
        f"{kind}{ws}",
        "test_assert_on_one_rank",
        f"rank {ws - 1} failed",
        "Tensor-likes are not close",
    )


@pytest.mark.parametrize(("kind", "ws"), CASES, ids=IDS)
def test_skip_on_one_rank_is_a_skip(run, kind, ws):
    status, text = outcome(run, f"{kind}{ws}", "test_skip_on_one_rank")
    assert status == "skipped"
    assert "only the last rank skips" in text
    if ws > 1:
        assert f"rank {ws - 1}" in text


@pytest.mark.parametrize(
    ("kind", "ws"),
    [c for c in CASES if c[0] != "Thr"],  # a crash ends a threads run's whole process
    ids=[i for c, i in zip(CASES, IDS) if c[0] != "Thr"],
)
@pytest.mark.parametrize(
    ("test", "cause"),
    [
        ("test_crash_exit", "exited with code 3"),
        ("test_crash_sigkill", "killed by SIGKILL"),
        ("test_crash_segv", "killed by SIGSEGV"),
    ],
)
def test_crashed_rank_is_named_with_its_signal_or_code(run, kind, ws, test, cause):
    text = assert_failed(run, f"{kind}{ws}", test, f"rank {ws - 1} crashed: {cause}")
    if test == "test_crash_segv":  # faulthandler's stack of the crashing rank
        assert "in test_crash_segv" in text


@pytest.mark.parametrize(("kind", "ws"), CASES, ids=IDS)
def test_hang_ends_at_timeout_with_stacks(run, kind, ws):
    assert_failed(
        run,
        f"{kind}{ws}",
        "test_hang",
        f"rank {ws - 1}",
        "at the 3 s per-test timeout",
        "in test_hang",
        f"--- rank {ws - 1} stack",
    )


@pytest.mark.parametrize(
    ("kind", "ws"), [c for c in CASES if c[1] > 1], ids=[i for c, i in zip(CASES, IDS) if c[1] > 1]
)
def test_mismatched_collective_shows_each_ranks_collective(run, kind, ws):
    text = assert_failed(run, f"{kind}{ws}", "test_mismatched_collective", "rank 0")
    assert "all_reduce" in text and "all_gather_into_tensor" in text


@pytest.mark.parametrize(("kind", "ws"), CASES, ids=IDS)
def test_later_tests_run_after_failures(run, kind, ws):
    # in pool mode: crashed or hung ranks were replaced, and nothing was poisoned
    assert outcome(run, f"{kind}{ws}", "test_zz_after_failures")[0] == "passed"


def test_no_rank_outlives_its_test(run):
    # checked inside the run, after every earlier class ...
    assert outcome(run, "TestZZNoLeftovers", "test_no_rank_left")[0] == "passed"
    # ... and after it ended
    recorded = [int(p.stem) for p in run["pids"].iterdir()]
    assert recorded, "the scenarios recorded no rank pids"
    alive = [
        pid
        for pid in recorded
        if Path(f"/proc/{pid}").exists()
        and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    ]
    assert not alive
