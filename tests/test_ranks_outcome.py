"""From what each rank reported to one verdict and message (no ranks spawned)."""

from __future__ import annotations

import unittest

import pytest

from harness.ranks.outcome import RankAssertionError, RankError, RankOutcome, cause, verdict

RERUN = "pytest tests/test_x.py::C::test_y"


def tb(line: str, exc: str) -> str:
    return (
        f'Traceback (most recent call last):\n  File "t.py", line 3, in test_y\n    {line}\n{exc}\n'
    )


def judge(*outcomes: RankOutcome, timed_out: bool = False):
    return verdict(
        list(outcomes),
        world_size=len(outcomes),
        test_name="C.test_y",
        timeout=5,
        timed_out=timed_out,
        rerun=RERUN,
    )


def test_all_passed():
    v = judge(RankOutcome(0, "passed"), RankOutcome(1, "passed"))
    assert v.status == "passed"
    v.raise_if_not_passed()


def test_a_skip_on_one_rank_is_a_skip_that_names_it():
    v = judge(RankOutcome(0, "passed"), RankOutcome(1, "skipped", reason="no fp8"))
    assert (v.status, v.message) == ("skipped", "skipped on rank 1 (rank 1: no fp8)")
    with pytest.raises(unittest.SkipTest):
        v.raise_if_not_passed()


def test_the_same_skip_everywhere_is_just_its_reason():
    v = judge(RankOutcome(0, "skipped", reason="r"), RankOutcome(1, "skipped", reason="r"))
    assert v.message == "r"


def test_first_failure_leads_and_peers_that_lost_it_get_one_line():
    first = RankOutcome(
        1, "failed", texts=[tb("assert x", "AssertionError: x is off")], assertion=True, order=1.0
    )
    lost = RankOutcome(
        0,
        "failed",
        order=2.0,
        texts=[
            tb(
                "dist.barrier()",
                "RuntimeError: [pair.cc:553] Connection closed by peer [127.0.0.1]:1",
            )
        ],
    )
    v = judge(lost, first)
    lines = v.message.splitlines()
    assert lines[0] == "C.test_y failed on 2 of 2 ranks:"
    assert lines[1] == "  rank 1 failed: AssertionError: x is off"
    assert lines[2].startswith("  rank 0 then failed in a collective that lost rank 1")
    assert "--- rank 1 traceback ---" in v.message and "--- rank 0 traceback ---" not in v.message
    assert lines[-1] == f"Rerun just this test: {RERUN}"
    with pytest.raises(RankError):  # not every failure was an assertion
        v.raise_if_not_passed()


def test_identical_tracebacks_are_shown_once():
    text = tb("assert 0", "AssertionError: same")
    v = judge(
        RankOutcome(0, "failed", texts=[text], assertion=True, order=1),
        RankOutcome(1, "failed", texts=[text], assertion=True, order=2),
    )
    assert "  ranks 0, 1 failed: AssertionError: same" in v.message.splitlines()
    assert v.message.count("--- rank 0 traceback ---") == 1
    assert "--- rank 1: same traceback as rank 0 ---" in v.message
    with pytest.raises(RankAssertionError):
        v.raise_if_not_passed()


def test_crash_names_signal_and_hang_shows_stack():
    v = judge(
        RankOutcome(0, "crashed", exitcode=-9, order=1),
        RankOutcome(1, "stopped", stack='  File "t.py", line 9 in test_y'),
    )
    assert "rank 0 crashed: killed by SIGKILL (exit code -9)" in v.message
    assert "rank 1 stopped after rank 0 failed" in v.message
    assert '--- rank 1 stack (stopped) ---\n  File "t.py", line 9 in test_y' in v.message
    v = judge(RankOutcome(0, "hung", stack="  File x"), timed_out=True)
    assert v.message.startswith("C.test_y timed out after 5 s on 1 of 1 ranks:")
    assert "@timeout_after" in v.message


def test_cause_is_the_exception_line_not_the_last_line():
    text = tb(
        "self.assertEqual(a, b)",
        "AssertionError: Tensor-likes are not close!\n\nMismatched elements: 1 / 2",
    )
    assert cause(text) == "AssertionError: Tensor-likes are not close!"
