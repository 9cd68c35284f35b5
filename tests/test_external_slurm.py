"""The Slurm template, run for real with a stand-in ``srun`` that starts tasks locally.

It also hangs a rank past its per-test timeout: that rank must leave with its
stacks, and the other must name it and stop.

Under Slurm no agent serves a store: rank 0 does. The template's own commands
(scontrol for the first node, srun, ``harness run --launcher slurm``) run as
they would on a cluster with RUNTIME=none; only srun and scontrol are fakes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SBATCH = ROOT / "deploy" / "slurm" / "dtensor-harness.sbatch"

FAKE_SRUN = """#!/bin/bash
# srun for one node: start $FAKE_NTASKS copies of the command with Slurm's task variables
n=${FAKE_NTASKS:-2}
pids=()
for ((i = 0; i < n; i++)); do
    SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NODEID=0 SLURM_NTASKS=$n \\
        SLURM_TASKS_PER_NODE=$n "$@" &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""


@pytest.mark.parametrize("hang_rank", [1, 0])
def test_the_sbatch_template_runs_a_cell_on_slurm_tasks(tmp_path, hang_rank):
    """hang_rank 0: the rank that serves the store gives up; it must write the merged
    JUnit XML before it exits (it used to leave none, which made this test flaky
    whenever rank 0, not only rank 1, reached the end of its grace)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    results = tmp_path / "results"
    env = {
        **os.environ,
        # the template runs `python`: the one running these tests, venv or not
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "CELL": "cpu-2rank",
        "RUNTIME": "none",
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_SUBMIT_DIR": str(ROOT),
        "MATRIX": str(ROOT / "tests" / "data" / "external" / "matrix.toml"),
        "RESULTS": str(results),
        "HARNESS_TEST_HANG_RANK": str(hang_rank),
    }
    env.pop("MASTER_PORT", None)
    proc = subprocess.run(
        [
            "bash",
            str(SBATCH),
            "-k",
            "collective or fails_on_one_rank or hangs or recovers",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    # the fake srun exits with the last rank's code: with rank 0 gone, rank 1's
    # session ends "interrupted" (pytest's 2)
    assert proc.returncode == (1 if hang_rank == 1 else 2), (
        proc.stdout[-3000:] + proc.stderr[-3000:]
    )
    junit = results / "cpu-2rank" / "junit.xml"
    assert junit.exists(), "no merged JUnit XML:\n" + proc.stdout[-3000:] + proc.stderr[-3000:]
    cases = {}
    for case in ET.parse(results / "cpu-2rank" / "junit.xml").getroot().iter("testcase"):
        kids = [k for k in case if k.tag != "properties"]
        cases[case.get("name")] = (kids[0].tag, kids[0].get("message", "")) if kids else None
    assert cases["test_collective"] is None
    tag, message = cases["test_fails_on_one_rank"]
    assert tag == "failure" and "rank 1 failed: AssertionError: planted failure" in message
    # rank 1 hangs: it prints its stacks and leaves, rank 0 names it, the session stops
    tag, message = cases["test_hangs_on_one_rank"]
    assert tag == "failure" and "still running at the 3 s per-test timeout" in message
    assert "test_then_recovers" not in cases
    if hang_rank == 1:
        assert "rank 0 still running at the 3 s per-test timeout" in message
        assert "rank 1 sent no outcome: it hung past the 3 s" in message
        log = (results / "cpu-2rank" / "ranks" / "rank1.log").read_text()
        assert "test_hangs_on_one_rank still running after 3 s" in log
        assert 'cases.py", line' in log and "in test_hangs_on_one_rank" in log  # its stack
        assert "merged the JUnit XML of 1 of 2 ranks" in proc.stdout
    else:  # rank 0 gave up: it agreed on the test and merged before exiting
        assert "--- rank 0 stack (still running at the timeout) ---" in message
        assert "test_hangs_on_one_rank still stuck" in proc.stderr
        assert "merged the JUnit XML of 2 of 2 ranks" in proc.stderr, proc.stderr[-3000:]
