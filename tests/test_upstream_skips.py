"""Upstream's skip exit codes raised in-process are skips with their reason (issue 16, item 7).

A file that swapped only its common_dtensor import still takes ``skip_if_lt_x_gpu``
from PyTorch's common_distributed, which calls ``sys.exit(81)`` when devices are
missing. Rank processes turn that code into a skip; LocalTensor and threads ranks
run in the test's own process and must do the same, not fail with SystemExit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "ranks" / "upstream_skips.py"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("upstream-skips")
    xml = tmp / "junit.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", str(DATA), "-p", "no:cacheprovider", "-q",
         f"--junitxml={xml}"],
        cwd=tmp, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=600,
    )  # fmt: skip
    found = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kids = [(child.tag, child.get("message") or "") for child in case]
        tag, message = kids[0] if kids else ("passed", "")
        found[f"{case.get('classname').rsplit('.', 1)[1]}.{case.get('name')}"] = (tag, message)
    return found


def _needs_local_tensor(test: str) -> None:
    """The LocalTensor cases skip, naming it, on a torch without it (< 2.10)."""
    from harness import compat

    missing = "Local" in test and compat.local_tensor_missing()
    if missing:
        pytest.skip(missing)


@pytest.mark.parametrize(
    ("test", "reason"),
    [
        ("UpstreamSkipLocal.test_needs_four_gpus", "Need at least 4 accelerator devices"),
        ("UpstreamSkipProcessWithLocalTensor.test_needs_four_gpus", "Need at least 4"),
        ("UpstreamSkipProcessWithLocalTensor.test_exits_with_a_skip_code", "small world size"),
        ("UpstreamSkipThreads.test_needs_four_gpus", "Need at least 4 accelerator devices"),
    ],
)
def test_a_skip_code_is_a_skip_with_its_reason(outcomes, test, reason):
    _needs_local_tensor(test)
    tag, message = outcomes[test]
    assert tag == "skipped" and reason in message, (tag, message)


def test_an_exit_code_that_is_no_skip_code_still_fails(outcomes):
    _needs_local_tensor("UpstreamSkipLocal")
    tag, message = outcomes["UpstreamSkipLocal.test_exit_that_is_no_skip_code_fails"]
    assert tag == "failure" and "SystemExit: 3" in message
