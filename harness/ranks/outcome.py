"""Turning what each rank reported into one verdict and one readable message.

A skip on any rank is a skip. Otherwise the first rank that failed is shown in
full, other ranks' tracebacks only where they differ, crashed ranks with their
signal or exit code, and ranks that were still running with their stacks.
The message ends with the one command that reruns just this test.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field


@dataclass
class RankOutcome:
    rank: int
    # passed | failed | skipped | crashed | hung | stopped | broken
    status: str
    reason: str = ""
    texts: list[str] = field(default_factory=list)
    exitcode: int | None = None
    stack: str = ""
    seconds: float = 0.0
    assertion: bool = False
    order: float = 0.0  # when it failed (wall clock): the first failure is the likely cause


class RankFailure(Exception):
    """Base of the errors the runner raises for a test that failed on some rank."""


class RankAssertionError(RankFailure, AssertionError):
    """Every failing rank failed an assertion: unittest counts it a failure."""


class RankError(RankFailure, RuntimeError):
    """A rank raised, crashed or hung: unittest counts it an error."""


def _ranks(numbers: list[int]) -> str:
    numbers = sorted(numbers)
    word = "rank" if len(numbers) == 1 else "ranks"
    return f"{word} {', '.join(map(str, numbers))}"


def exit_description(code: int | None) -> str:
    if code is None:
        return "vanished without an exit code"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} (exit code {code})"
    return f"exited with code {code} before reporting a result"


def cause(text: str) -> str:
    """The exception line of a formatted traceback."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(" ") and ("Error" in line or "Exception" in line or ":" in line):
            return line.strip()
    return lines[-1].strip() if lines else "(no message)"


@dataclass
class Verdict:
    status: str  # passed | skipped | failed
    message: str = ""
    assertion: bool = False

    def raise_if_not_passed(self) -> None:
        __tracebackhide__ = True
        import unittest

        if self.status == "skipped":
            raise unittest.SkipTest(self.message)
        if self.status == "failed":
            cls = RankAssertionError if self.assertion else RankError
            raise cls(self.message)


def verdict(
    outcomes: list[RankOutcome],
    *,
    world_size: int,
    test_name: str,
    timeout: float,
    timed_out: bool,
    rerun: str,
) -> Verdict:
    skipped = [o for o in outcomes if o.status == "skipped"]
    if skipped:
        reasons = sorted({o.reason for o in skipped})
        if len(skipped) == world_size and len(reasons) == 1:
            return Verdict("skipped", reasons[0])
        per_rank = "; ".join(f"rank {o.rank}: {o.reason}" for o in skipped)
        return Verdict("skipped", f"skipped on {_ranks([o.rank for o in skipped])} ({per_rank})")

    bad = [o for o in outcomes if o.status != "passed"]
    if not bad:
        return Verdict("passed")

    def by_arrival(status: tuple[str, ...]) -> list[RankOutcome]:
        return sorted((o for o in outcomes if o.status in status), key=lambda o: o.order)

    failed = by_arrival(("failed", "broken"))
    crashed = by_arrival(("crashed",))
    hung = [o for o in outcomes if o.status == "hung"]
    stopped = [o for o in outcomes if o.status == "stopped"]

    summary: list[str] = []
    for o in sorted(failed + crashed, key=lambda o: o.order):
        if o.status == "crashed":
            summary.append(f"rank {o.rank} crashed: {exit_description(o.exitcode)}")
        else:
            text = cause(o.texts[-1]) if o.texts else "no traceback"
            summary.append(
                f"rank {o.rank} failed: {text if len(text) < 160 else text[:157] + '...'}"
            )
    if hung:
        summary.append(
            f"{_ranks([o.rank for o in hung])} still running at the {timeout:g} s per-test timeout"
        )
    if stopped:
        first = min(failed + crashed, key=lambda o: o.order).rank if (failed or crashed) else None
        why = f"after rank {first} failed" if first is not None else "early"
        summary.append(f"{_ranks([o.rank for o in stopped])} stopped {why}")

    head = f"{test_name} failed on {len(failed) + len(crashed) + len(hung)} of {world_size} ranks"
    if timed_out and not failed and not crashed:
        head = f"{test_name} timed out after {timeout:g} s on {len(hung)} of {world_size} ranks"
    lines = [head + ":", *(f"  {s}" for s in summary), ""]

    seen: dict[str, int] = {}
    for o in sorted(failed + crashed, key=lambda o: o.order):
        if o.status == "crashed":
            lines.append(f"--- rank {o.rank} crashed: {exit_description(o.exitcode)} ---")
            if o.stack.strip():
                lines += [o.stack.rstrip(), ""]
            continue
        for text in o.texts:
            key = text.replace(f"rank {o.rank}", "rank ?")
            if key in seen:
                lines.append(f"--- rank {o.rank}: same traceback as rank {seen[key]} ---")
                continue
            seen[key] = o.rank
            lines += [f"--- rank {o.rank} traceback ---", text.rstrip(), ""]
    for o in hung + stopped:
        state = "still running at the timeout" if o.status == "hung" else "stopped"
        lines.append(f"--- rank {o.rank} stack ({state}) ---")
        lines += [o.stack.rstrip() or "(no stack: the rank did not answer SIGUSR1)", ""]
    if timed_out:
        lines.append(
            "Raise the limit with @timeout_after(seconds) on the test, a `timeout` attribute "
            "on the class, or HARNESS_TIMEOUT / --harness-timeout."
        )
    lines.append(f"Rerun just this test: {rerun}")
    assertion = bool(failed) and not crashed and not hung and all(o.assertion for o in failed)
    return Verdict("failed", "\n".join(lines), assertion=assertion)
