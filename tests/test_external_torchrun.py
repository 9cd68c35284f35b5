"""Two torchrun agents on 127.0.0.1, two ranks each: one cell's suite end to end.

One run proves the whole contract: a test that fails on one rank fails on all
with that rank's error, a skip on one rank is a skip, a plain test's one-rank
failure survives the merge, and a rank killed mid-run ends the job -- named, in
the merged report on rank 0, with no process left behind.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "tests" / "data" / "external" / "matrix.toml"
LIMIT_S = 240  # the run takes well under a minute alone; the limit only stops a hang


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, owner: subprocess.Popen, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and owner.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)


def _marked(token: str) -> list[int]:
    """Processes whose environment carries ``token``: the agents and every rank."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if token.encode() in environ:
            pids.append(int(entry))
    return pids


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    results = tmp_path_factory.mktemp("external")
    token = f"HARNESS_TEST_TOKEN={uuid.uuid4().hex}"
    port = _free_port()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HARNESS_TEST_KILL_RANK": "3",
        "HARNESS_HEARTBEAT_TIMEOUT": "6",
        token.split("=")[0]: token.split("=")[1],
    }

    def agent(node: int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "harness", "run", "cpu-4rank", "--matrix", str(MATRIX)]
            + ["--results", str(results), "--launcher", "torchrun", "--nnodes", "2"]
            + ["--nproc-per-node", "2", "--node-rank", str(node)]
            + ["--rdzv-endpoint", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    # node 0 serves the store (as the first node of a real job does): start it first
    agents = [agent(0)]
    _wait_for_port(port, agents[0])
    agents.append(agent(1))
    outputs, codes = [], []
    deadline = time.monotonic() + LIMIT_S
    try:
        for agent in agents:
            out, _ = agent.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append(out)
            codes.append(agent.returncode)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the torchrun job did not end within {LIMIT_S} s")
    finally:
        for agent in agents:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
    # ranks leave with their agents; give the last exits a moment to be reaped
    left = _marked(token)
    for _ in range(50):
        if not left:
            break
        time.sleep(0.1)
        left = _marked(token)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    junit = results / "junit.xml"
    cases = {}
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            kids = [k for k in case if k.tag != "properties"]
            cases[case.get("name")] = (kids[0].tag, kids[0].get("message", "")) if kids else None
    return {"output": "\n".join(outputs), "codes": codes, "left": left, "cases": cases}


def test_the_job_ends_failed_with_no_process_left(job):
    assert job["left"] == [], f"processes outlived the job: {job['left']}"
    assert all(code != 0 for code in job["codes"]), job["output"][-3000:]


def test_rank_0_merges_every_surviving_rank(job):
    cases = job["cases"]
    assert cases, "no merged JUnit XML on rank 0:\n" + job["output"][-3000:]
    for name in ("test_collective", "test_dtensor", "test_then_recovers"):
        assert cases[name] is None, (name, cases[name])


def test_a_failure_on_one_rank_fails_the_test_naming_that_rank(job):
    tag, message = job["cases"]["test_fails_on_one_rank"]
    assert tag == "failure"
    assert "rank 1 failed: AssertionError: planted failure on rank 1" in message


def test_a_skip_on_one_rank_is_a_skip_with_its_reason(job):
    assert job["cases"]["test_skips_on_one_rank"] == (
        "skipped",
        "skipped on rank 2 (rank 2: planted skip on rank 2)",
    )


def test_a_plain_test_failing_on_one_rank_survives_the_merge(job):
    tag, message = job["cases"]["test_plain_fails_on_rank_1"]
    assert tag == "failure" and message.startswith("on rank 1 of ranks 0, 1")


def test_a_killed_rank_ends_the_job_and_is_named(job):
    tag, message = job["cases"]["test_y_killed"]
    assert tag == "failure" and "rank 3 sent no outcome: no heartbeat" in message
    assert "test_z_not_reached" not in job["cases"]  # the session stopped
    assert job["cases"]["rank 3"][0] == "error"
    # torchrun's agent stops rank 2 when its node-mate dies: whether rank 0 sees
    # that before it stops is a race, so rank 2 may be named too, never rank 0/1
    lost = re.search(r"the job lost rank\(s\) ([\d, ]+) of 4", job["output"])
    assert lost, job["output"][-2000:]
    assert 3 in {int(r) for r in lost.group(1).split(", ")} <= {2, 3}
