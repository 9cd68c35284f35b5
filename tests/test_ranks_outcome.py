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


# --- the right rank blamed (issue 16, item 2) ---------------------------------------

C10D = "/venv/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py"


def in_collective(call: str, exc: str) -> str:
    return (
        "Traceback (most recent call last):\n"
        '  File "t.py", line 3, in test_y\n    dist.' + call + "(t)\n"
        '  File "/venv/lib/python3.11/site-packages/torch/distributed/c10d_logger.py", '
        "line 81, in wrapper\n    return func(*args, **kwargs)\n"
        f'  File "{C10D}", line 2806, in {call}\n    work = group.{call}([tensor], opts)\n'
        f"{exc}\n"
    )


RESET = "RuntimeError: [gloo/transport/tcp/pair.cc:534] Connection reset by peer"
GLOO_TIMEOUT = "RuntimeError: [gloo/tcp/unbound_buffer.cc:81] Timed out waiting 3000ms for recv"


def test_a_crash_heard_of_late_is_still_the_cause():
    """The parent learns of a SIGKILL after the survivor's 'connection reset': the
    crash leads, the survivor is its victim (it led in 15 of 24 crash runs)."""
    v = judge(
        RankOutcome(0, "failed", texts=[in_collective("all_reduce", RESET)], order=1.0),
        RankOutcome(1, "crashed", exitcode=-9, order=2.0),
    )
    summary = v.message.split("\n\n", 1)[0].splitlines()
    assert summary[1] == "  rank 1 crashed: killed by SIGKILL (exit code -9)", v.message
    assert summary[2].startswith("  rank 0 then failed in a collective that lost rank 1:")
    assert "--- rank 0 traceback ---" not in v.message  # a victim's traceback is noise


def test_a_rank_stuck_outside_any_collective_is_the_cause_not_a_victim():
    """Rank 2 sleeps; the others time out waiting for it in a collective. It used to
    read 'rank 2 stopped after rank 0 failed'."""
    v = judge(
        RankOutcome(0, "failed", texts=[in_collective("barrier", GLOO_TIMEOUT)], order=1.0),
        RankOutcome(1, "failed", texts=[in_collective("barrier", GLOO_TIMEOUT)], order=1.5),
        RankOutcome(2, "stopped", stack='  File "t.py", line 9 in test_y\n'),
    )
    summary = v.message.split("\n\n", 1)[0].splitlines()
    assert summary[1] == "  rank 2 hung in its own code, outside any collective", v.message
    assert summary[2].startswith("  ranks 0, 1 then failed in a collective that lost rank 2:")
    assert "stopped after" not in v.message
    assert "--- rank 2 stack (hung outside any collective) ---" in v.message


def test_a_rank_stopped_in_a_collective_after_a_failure_is_a_victim():
    stack = f'  File "{C10D}", line 4100 in barrier\n  File "t.py", line 9 in test_y\n'
    v = judge(
        RankOutcome(0, "failed", texts=[tb("assert x", "AssertionError: boom")], order=1.0),
        RankOutcome(1, "stopped", stack=stack),
    )
    assert "rank 1 stopped after rank 0 failed" in v.message
    assert "rank 0 failed: AssertionError: boom" in v.message


def test_mismatched_collectives_name_each_ranks_call():
    v = judge(
        RankOutcome(0, "failed", texts=[in_collective("all_reduce", GLOO_TIMEOUT)], order=1.0),
        RankOutcome(1, "failed", texts=[in_collective("broadcast", GLOO_TIMEOUT)], order=1.1),
    )
    assert "mismatched collectives: rank 0 called all_reduce, rank 1 called broadcast" in (
        v.message
    )


def test_at_a_timeout_the_rank_stuck_in_its_own_code_is_the_hang():
    """Rank 0 sleeps, rank 1 waits for it in barrier: both are still running at the
    timeout, but only rank 0 is the hang (it read 'ranks 0, 1 still running')."""
    waiting = f'  File "t.py", line 9, in test_y\n  File "{C10D}", line 4100, in barrier\n'
    v = judge(
        RankOutcome(0, "hung", stack='  File "t.py", line 5, in test_y\n    time.sleep(600)\n'),
        RankOutcome(1, "hung", stack=waiting),
        timed_out=True,
    )
    summary = v.message.split("\n\n", 1)[0].splitlines()
    assert summary == [
        "C.test_y timed out after 5 s on 2 of 2 ranks:",
        "  rank 0 still running at the 5 s per-test timeout",
        "  rank 1 waiting in barrier for rank 0",
    ], v.message
