"""Turning what each rank reported into one verdict and one readable message.

A skip on any rank is a skip. Otherwise the first rank that failed is shown in
full, other ranks' tracebacks only where they differ, crashed ranks with their
signal or exit code, and ranks that were still running with their stacks.
The message ends with the one command that reruns just this test.
"""

from __future__ import annotations

import re
import signal
import time
from dataclasses import dataclass, field

from harness.outcomes import RankStatus, TestStatus


@dataclass
class RankOutcome:
    rank: int
    status: RankStatus  # a plain name is turned into one (an unknown name is an error)
    reason: str = ""
    texts: list[str] = field(default_factory=list)
    exitcode: int | None = None
    stack: str = ""
    seconds: float = 0.0
    assertion: bool = False
    order: float = 0.0  # when it failed (wall clock): the first failure is the likely cause
    #: warnings the test raised, as (category module, category name, message, file, line)
    warnings: list[tuple[str, str, str, str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = RankStatus(self.status)

    @classmethod
    def from_report(cls, msg: dict) -> RankOutcome:
        """What a rank reported about its test (``worker.run_one``'s dict)."""
        return cls(
            rank=msg["rank"],
            status=msg["status"],
            reason=msg.get("reason", ""),
            texts=list(msg.get("texts", [])),
            seconds=msg.get("seconds", 0.0),
            assertion=msg.get("assertion", False),
            order=msg.get("failed_at") or time.time(),
            warnings=[tuple(w) for w in msg.get("warnings", ())],
        )


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
    """The exception line of a formatted traceback (its first line, for long messages)."""
    lines = text.rstrip().splitlines()
    last_frame = max((i for i, line in enumerate(lines) if line.startswith("  File ")), default=-1)
    for line in lines[last_frame + 1 :]:
        if line.strip() and not line.startswith((" ", "\t")):
            return line.strip()
    return lines[-1].strip() if lines else "(no message)"


# What a rank says when a peer failed first and its collective lost the peer.
_PEER_LOST = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "NCCL communicator was aborted",
    "process group has been destroyed",
    "cannot complete: rank",  # threads mode: a peer failed, or left without calling it
    "Timed out waiting",  # gloo: the peer never came to the collective
)
# Where a stack or traceback is inside a collective (c10d or functional collectives).
_COLLECTIVE_FILES = ("distributed_c10d.py", "_functional_collectives.py", "threaded_pg.py")
_FRAME = re.compile(r'File "([^"]+)", line (\d+),? in (\w+)')  # tracebacks, faulthandler


def _victim(o: RankOutcome) -> bool:
    """It failed only because a peer was gone or never came (not a cause of its own)."""
    return o.status == "failed" and bool(o.texts) and any(p in o.texts[-1] for p in _PEER_LOST)


def collective_of(text: str) -> str | None:
    """The collective a traceback or stack was in (its innermost c10d frame), or None."""
    found = None
    for path, _, func in _FRAME.findall(text):
        if path.endswith(_COLLECTIVE_FILES) and not func.startswith("_"):
            found = found or func  # outermost public c10d function: what the test called
    return found


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Verdict:
    status: TestStatus  # a plain name is turned into one
    message: str = ""
    assertion: bool = False

    def __post_init__(self) -> None:
        self.status = TestStatus(self.status)

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
    clock_note: str = "",
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
    # At a timeout, a rank stuck in its own code is the hang; ranks waiting for it in a
    # collective are its victims.
    own_hang = [o for o in hung if o.stack and not collective_of(o.stack)]
    waiting = [o for o in hung if own_hang and o not in own_hang]
    hung = [o for o in hung if o not in waiting]
    stopped = [o for o in outcomes if o.status == "stopped"]

    ordered = sorted(failed + crashed, key=lambda o: o.order)
    # The cause is the first rank that failed for its own reason: a crash, a hang or an
    # error; a rank whose collective lost its peer is a victim whenever anything else
    # went wrong, whatever the order the parent heard of them in.
    own = [o for o in ordered if not _victim(o)]
    # With no failure of its own anywhere, a rank stopped outside any collective was
    # waiting for no one: it was stuck in its own code, the cause, not a victim.
    stuck = [] if own else [o for o in stopped if o.stack and not collective_of(o.stack)]
    stopped = [o for o in stopped if o not in stuck]
    first = own[0] if own else (ordered[0] if ordered and not (hung or stuck) else None)
    secondary = [o for o in ordered if o is not first and _victim(o)]
    primary = [o for o in ordered if o not in secondary]

    summary: list[str] = []
    by_cause: dict[str, list[int]] = {}
    for o in primary:
        if o.status == "crashed":
            line = f"crashed: {exit_description(o.exitcode)}"
        else:
            line = f"failed: {_short(cause(o.texts[-1]) if o.texts else 'no traceback')}"
        by_cause.setdefault(line, []).append(o.rank)
    for line, where in by_cause.items():  # in order of the first rank to fail that way
        summary.append(f"{_ranks(where)} {line}")
    if stuck:
        summary.append(
            f"{_ranks([o.rank for o in stuck])} hung in its own code, outside any collective"
        )
    lost = [first.rank] if first is not None else [o.rank for o in stuck + hung]
    if secondary and lost:
        summary.append(
            f"{_ranks([o.rank for o in secondary])} then failed in a collective that lost "
            f"{_ranks(lost)}: {_short(cause(secondary[0].texts[-1]), 100)}"
        )
    if hung:
        summary.append(
            f"{_ranks([o.rank for o in hung])} still running at the {timeout:g} s per-test timeout"
        )
    if waiting:
        calls = sorted({collective_of(o.stack) or "a collective" for o in waiting})
        summary.append(
            f"{_ranks([o.rank for o in waiting])} waiting in {', '.join(calls)} for "
            f"{_ranks([o.rank for o in own_hang])}"
        )
    if stopped:
        why = f"after rank {first.rank} failed" if first is not None else "early"
        summary.append(f"{_ranks([o.rank for o in stopped])} stopped {why}")
    calls = {
        o.rank: collective_of(o.stack or (o.texts[-1] if o.texts else ""))
        for o in outcomes
        if o.status != "passed"
    }
    if len({c for c in calls.values() if c}) > 1:  # the ranks met in different collectives
        summary.append(
            "mismatched collectives: "
            + ", ".join(f"rank {r} called {c or 'none'}" for r, c in sorted(calls.items()))
        )

    head = f"{test_name} failed on {len(failed + crashed + hung + stuck + waiting)} of {world_size} ranks"
    if timed_out and not failed and not crashed:
        head = f"{test_name} timed out after {timeout:g} s on {len(hung + waiting)} of {world_size} ranks"
        head += f" ({clock_note})" if clock_note else ""
    lines = [head + ":", *(f"  {s}" for s in summary), ""]

    seen: dict[str, int] = {}
    for o in primary:
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
    for o in stuck + hung + waiting + stopped:
        state = {"hung": "still running at the timeout"}.get(o.status, "stopped")
        state = "hung outside any collective" if o in stuck else state
        state = "waiting in a collective at the timeout" if o in waiting else state
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
