"""How a rank, a test or a report can end: one vocabulary for every floor.

Torch-free and below the runner, so the ranks, the pytest plugin and the report
share the names. The enums are ``str`` valued: they compare equal to, print as
and serialise (JSON, pickle over a rank's pipe) as their plain names, so a
report written before they existed reads the same.

The skip exit codes are upstream's protocol: a rank that calls
``sys.exit(TEST_SKIPS[key].exit_code)`` reports a skip, not a failure.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, NamedTuple


class _Name(str, Enum):
    """A str enum whose ``str()`` and ``format()`` are its value on every Python."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class RankStatus(_Name):
    """What one rank reported (or was found in) for one test."""

    PASSED = "passed"
    FAILED = "failed"  # the body raised
    SKIPPED = "skipped"
    CRASHED = "crashed"  # the process died before it reported
    HUNG = "hung"  # still running at the timeout
    STOPPED = "stopped"  # stopped by the runner after a peer failed
    BROKEN = "broken"  # the rank could not start its test (import, group)
    READY = "ready"  # a pool rank that started and waits for tests


class TestStatus(_Name):
    """One test's verdict over all its ranks."""

    PASSED = "passed"
    SKIPPED = "skipped"
    FAILED = "failed"


class Outcome(_Name):
    """One test case as JUnit records it (and the report reads it)."""

    PASSED = "passed"
    FAILED = "failed"  # an assertion failed
    ERROR = "error"  # anything else went wrong (setup, a crash, a hang)
    SKIPPED = "skipped"
    WAIVED = "waived"  # reports only: a failure a waiver covers (it keeps what it ran to)
    OWN = "own"  # reports only: an op DTensor fails on the reference too (not the cell's)


class ReportVerdict(_Name):
    """A capability's, a cell's or a matrix's certification verdict, worst first."""

    FAIL = "fail"
    INCOMPLETE = "incomplete"  # the run itself broke off
    PASS = "pass"
    SKIP = "skip"  # nothing ran: neither certified nor failed


class TestSkip(NamedTuple):
    """A skip reason, and the exit code a rank may ``sys.exit`` with to report it."""

    exit_code: int
    message: str


def _multi(n: int, code: int) -> TestSkip:
    return TestSkip(code, f"Need at least {n} accelerator device{'s' if n > 1 else ''}")


#: Skip reasons, keyed as upstream's table so ``sys.exit(TEST_SKIPS[k].exit_code)`` works.
TEST_SKIPS: dict[str, TestSkip] = {
    "backend_unavailable": TestSkip(72, "Skipped because distributed backend is not available."),
    "small_worldsize": TestSkip(73, "Skipped due to small world size."),
    "odd_worldsize": TestSkip(87, "Skipped due to odd world size."),
    "no_cuda": TestSkip(74, "CUDA is not available."),
    "nccl": TestSkip(76, "c10d not compiled with NCCL support"),
    "skipIfRocm": TestSkip(78, "Test skipped for ROCm"),
    "no_peer_access": TestSkip(79, "Test skipped because no GPU peer access"),
    "generic": TestSkip(
        86, "Test skipped at subprocess level, look at subprocess log for skip reason"
    ),
    "importerror": TestSkip(88, "Test skipped due to missing import"),
    "no_accelerator": TestSkip(89, "accelerator is not available."),
    "world_size_above_cell": TestSkip(90, "World size above the active cell's"),
    **{
        f"multi-gpu-{n}": _multi(n, code)
        for n, code in zip(range(1, 9), (75, 77, 80, 81, 82, 83, 84, 85))
    },
    **{f"multi-gpu-{n}": _multi(n, 91 + n - 9) for n in range(9, 17)},
}

_BY_CODE = {skip.exit_code: skip.message for skip in TEST_SKIPS.values()}


def multi_gpu_skip(n: int) -> TestSkip:
    return TEST_SKIPS.get(f"multi-gpu-{n}") or TestSkip(
        TEST_SKIPS["generic"].exit_code, _multi(n, 0).message
    )


def skip_reason_for_exit_code(code: Any) -> str | None:
    """The reason behind a rank's ``sys.exit(code)``, or None if it is not a skip code."""
    return _BY_CODE.get(code) if isinstance(code, int) else None
