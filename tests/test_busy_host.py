"""A timeout catches hangs, not slowness: the per-test and per-op limits on a saturated host.

CPU burners (four per usable core, each bounded in time and killed at the end)
keep every process of the run waiting for a CPU most of the time. A rank or an
ops worker that computes then takes several times its CPU time in wall time and
must still pass; one that truly hangs (asleep, or blocked in a collective) must
fail within its limit, naming the ranks and where each stands.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.conformance import _ops_workers
from harness.conformance._ops_workers import OpsWorkers

# Saturates the host with CPU burners for minutes: it proves the timeouts on a loaded
# machine, so it runs with the slow tests (nox -s slow), not in the everyday loop.
pytestmark = pytest.mark.slow

SCENARIOS = Path(__file__).parent / "data" / "busy" / "scenarios.py"
LIMIT = 4  # the scenarios' and the ops workers' limit, in seconds


@pytest.fixture(scope="module")
def saturated():
    """Four CPU burners per usable core for the module's tests (at most 120 s each)."""
    loop = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end:\n    pass\n"
    burners = [
        subprocess.Popen([sys.executable, "-c", loop])
        for _ in range(4 * len(os.sched_getaffinity(0)))
    ]
    try:
        time.sleep(0.5)
        yield
    finally:
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait()


def _stretched(seconds: float) -> None:
    """The load must have stretched the work past the limit in wall time, or the
    test showed nothing (a wall-clock limit would have passed it too)."""
    if seconds <= LIMIT:
        pytest.skip(f"the burners did not saturate this host: {seconds:.1f} s of wall time")


def busy(conn, env, world_size, device_type, index, log, budget_mb):
    """An ops worker whose op "compute" burns 2 CPU seconds without finishing a sample,
    and whose op "hang" sleeps."""
    _ops_workers.start_worker(env, log)
    while True:
        key = conn.recv()
        if key is None:
            return
        started = time.monotonic()
        if key == "compute":
            end = time.process_time() + 2.0
            while time.process_time() < end:
                pass
        if key == "hang":
            time.sleep(60)
        conn.send(("done", key, "passed", "", time.monotonic() - started))


def test_an_ops_worker_that_computes_under_load_is_not_killed(saturated, monkeypatch):
    monkeypatch.setenv(_ops_workers.WORKERS_ENV, "1")
    workers = OpsWorkers(["compute"], world_size=2, device_type="cpu", timeout=LIMIT, target=busy)
    try:
        result = workers.result("compute")
    finally:
        workers.close()
    assert result.status == "passed", result.text
    _stretched(result.seconds)


def test_an_ops_worker_that_hangs_under_load_fails_within_the_limit(saturated, monkeypatch):
    monkeypatch.setenv(_ops_workers.WORKERS_ENV, "1")
    workers = OpsWorkers(["hang"], world_size=2, device_type="cpu", timeout=LIMIT, target=busy)
    started = time.monotonic()
    try:
        result = workers.result("hang")
    finally:
        workers.close()
    waited = time.monotonic() - started
    assert result.status == "failed"
    assert f"hang: no sample or layout finished in {LIMIT} s (the timeout" in result.text
    assert waited < 2 * LIMIT, f"a sleeping worker was given {waited:.1f} s"


@pytest.fixture(scope="module")
def ranks(saturated, tmp_path_factory):
    """The rank scenarios (pool and threads mode, 2 ranks), run on the saturated host."""
    xml = tmp_path_factory.mktemp("busy") / "junit.xml"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HARNESS_MODE", None)
    subprocess.run(
        [sys.executable, "-m", "pytest", str(SCENARIOS), "-p", "no:cacheprovider", "-q"]
        + [f"--junitxml={xml}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=Path(__file__).parent.parent,
    )
    results = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        failure = case.find("failure")
        text = "" if failure is None else f"{failure.get('message')}\n{failure.text}"
        results[f"{case.get('classname').split('.')[-1]}.{case.get('name')}"] = (
            float(case.get("time")),
            text,
        )
    return results


@pytest.mark.parametrize("cls", ["TestPool", "TestThreads"])
def test_ranks_that_compute_under_load_pass(ranks, cls):
    seconds, failure = ranks[f"{cls}.test_computes"]
    assert not failure, failure
    _stretched(seconds)


@pytest.mark.parametrize("cls", ["TestPool", "TestThreads"])
def test_ranks_that_hang_under_load_fail_within_the_limit(ranks, cls):
    seconds, failure = ranks[f"{cls}.test_hangs"]
    # who hangs and where each rank stands: rank 1 asleep in the test, rank 0 in barrier
    assert f"rank 1 still running at the {LIMIT} s per-test timeout" in failure, failure
    assert "in test_hangs" in failure
    assert "rank 0" in failure and "barrier" in failure
    assert seconds < 2 * LIMIT + 3, f"a hang was given {seconds:.1f} s"
