"""How the bases run a test: with_comms, the mode switch, timeouts, output, interrupts."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import unittest
from datetime import timedelta
from pathlib import Path

import data.ranks.modes_cases as cases  # a module, so pytest does not collect its classes
import pytest
from scenario_runs import pytest_argv, scenario_env  # tests/ is on sys.path

import harness.bases as bases
import harness.local
import harness.ranks.run
from harness import DTensorTestBase, timeout_after
from harness.ranks import pg_timeout_for


def run(cls: type, name: str) -> unittest.TestResult:
    result = unittest.TestResult()
    cls(name).run(result)
    return result


def assert_passes(cls: type, name: str) -> None:
    result = run(cls, name)
    problems = result.errors + result.failures
    assert not problems and not result.skipped, problems[0][1] if problems else result.skipped


@pytest.mark.parametrize(
    "name", ["test_bare", "test_eager_init", "test_backend", "test_setup_ran_in_rank"]
)
def test_with_comms_forms(name):
    assert_passes(cases.WithComms, name)


def test_pool_and_op_bases_start_their_group_once():
    assert_passes(cases.Pool, "test_pg_is_ready")
    assert_passes(cases.Ops, "test_mesh")
    cases.Pool.tearDownClass()
    cases.Ops.tearDownClass()


def test_rank_output_is_forwarded_with_its_rank(capsys):
    assert_passes(cases.WithComms, "test_prints")
    out = capsys.readouterr().out
    assert "[rank 0] hello from rank 0" in out and "[rank 1] hello from rank 1" in out


def test_failed_subtest_is_reported_with_its_parameters():
    result = run(cases.WithComms, "test_subtests")
    assert len(result.failures) == 1
    text = result.failures[0][1]
    assert "rank 1 failed" in text and "(n=2)" in text and "subtest n=2 fails on rank 1" in text


def test_local_mode_goes_to_run_locally(monkeypatch):
    import harness.local.runner as local_runner

    calls = []
    monkeypatch.setattr(
        local_runner, "run_locally", lambda test, name: calls.append((test, name)), raising=False
    )
    monkeypatch.setattr(harness.ranks.run, "run_in_processes", lambda job: pytest.fail("spawned"))
    monkeypatch.setenv("HARNESS_MODE", "local")
    assert_passes(cases.WithComms, "test_bare")
    assert [name for _, name in calls] == ["test_bare"]
    test = calls[0][0]
    assert test._harness_direct is False  # restored after the local run


def test_every_mode_has_a_runner_with_the_one_signature():
    import inspect

    for mode in bases.RUNNERS:
        runner = bases._runner(mode)
        params = list(inspect.signature(runner).parameters)
        assert params == ["job"], f"{mode}: {runner.__module__}.{runner.__name__}{params}"
    assert set(bases.MODES) == set(bases.RUNNERS) - bases.MEET_FOR_SKIPS


class _PooledProcessBase(DTensorTestBase):
    __test__ = False
    rank_mode = "pool"

    def test_any(self):
        pass


def test_pool_mode_on_a_per_test_base_names_the_base_to_use(monkeypatch):
    monkeypatch.setattr(harness.ranks.run, "run_in_pool", lambda job: pytest.fail("spawned"))
    result = run(_PooledProcessBase, "test_any")
    (_, text), *_ = result.errors
    assert "rank_mode='pool'" in text and "DTensorContinuousTestBase" in text


class _Timeouts(DTensorTestBase):
    __test__ = False  # only its attributes are used
    timeout = timedelta(seconds=40)

    @timeout_after(7)
    def test_decorated(self):
        pass

    def test_plain(self):
        pass


def test_timeout_precedence(monkeypatch):
    monkeypatch.setenv("HARNESS_TIMEOUT", "90")
    assert bases.effective_timeout(_Timeouts("test_decorated"), "test_decorated") == 7
    assert bases.effective_timeout(_Timeouts("test_plain"), "test_plain") == 40
    assert bases.effective_timeout(cases.Pool("test_pg_is_ready"), "test_pg_is_ready") == 90


@pytest.mark.parametrize("seconds", [2, 5, 60, 300, 3600])
def test_process_group_timeout_is_below_the_test_timeout(seconds):
    assert 1 <= pg_timeout_for(seconds) < seconds


def _alive(pids):
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def test_ctrl_c_leaves_no_rank_behind(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = subprocess.Popen(
        pytest_argv(str(Path(cases.__file__)), "-k", "test_sleep"),
        env=scenario_env(pids),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        recorded = [int(p.stem) for p in pids.iterdir()]
        assert len(recorded) == 2, proc.communicate(timeout=5)[0]
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 10
    while _alive(recorded) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(recorded)


def test_pytest_x_leaves_no_pool_rank_behind(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    scenarios = Path(cases.__file__).with_name("scenarios.py")
    proc = subprocess.run(
        pytest_argv("-x", str(scenarios), "-k", "Pool2"),
        env=scenario_env(pids),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "stopping after 1 failures" in proc.stdout, proc.stdout[-2000:]
    recorded = [int(p.stem) for p in pids.iterdir()]
    assert len(recorded) == 2  # the pool's two ranks ran the first (failing) test
    assert not _alive(recorded)
