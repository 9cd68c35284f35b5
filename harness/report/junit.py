"""JUnit XML (as pytest writes it) -> one result per test, with its capability.

The report is built from JUnit alone, so a run made by ``harness run``, by
plain pytest or on another machine can be certified the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from harness import junit
from harness.outcomes import Outcome
from harness.report import capabilities

OUTCOMES = (Outcome.PASSED, Outcome.FAILED, Outcome.ERROR, Outcome.SKIPPED)  # JUnit's
_REASON_CHARS = 300
_DETAIL_LINES = 60
_DETAIL_CHARS = 6000


@dataclass(frozen=True)
class CaseResult:
    id: str
    capability: str
    outcome: Outcome  # one of OUTCOMES, or WAIVED once a waiver covers it
    duration_s: float
    reason: str = ""
    details: str = ""
    op: str = ""  # the op a test checks (JUnit property "op"), for op waivers
    ran: str = ""  # a waived test's outcome as run (failed or error)
    waiver: int | None = None  # a waived test: index of its waiver in the report's waivers
    ran_on: str = ""  # where an op test ran (JUnit property "ran_on"); once per capability

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["ran_on"]  # the capability says it once, not each of 700 ops
        return {k: v for k, v in data.items() if v not in ("", None) or k in ("id", "outcome")}


def parse(path: str | Path) -> list[CaseResult]:
    return [_result(case) for case in junit.cases(path)]


def _result(case: junit.Case) -> CaseResult:
    outcome, reason, details = case.outcome, "", ""
    if outcome != Outcome.PASSED:
        message = case.message
        if outcome == Outcome.SKIPPED and case.kind == "pytest.xfail":
            message = f"expected failure: {message}"
        reason = _one_line(message)
        if outcome != Outcome.SKIPPED:
            details = _tail(case.text or message)
    props = case.properties
    collection_error = outcome == Outcome.ERROR and "collection failure" in reason
    capability = props.get("capability") or capabilities.from_junit(
        case.classname, case.name, collection_error
    )
    test_id = props.get("nodeid") or "::".join(p for p in (case.classname, case.name) if p)
    return CaseResult(
        id=test_id,
        capability=capability,
        outcome=outcome,
        duration_s=round(case.seconds, 3),
        reason=reason,
        details=details,
        op=props.get("op", ""),
        ran_on=props.get("ran_on", ""),
    )


def _one_line(text: str) -> str:
    return one_line(text, _REASON_CHARS)


def one_line(text: str, limit: int = _REASON_CHARS) -> str:
    """The reason in one line: the first line, and the next when the first ends in ':'.

    A rank failure reads "X failed on 1 of 4 ranks:" then "rank 2 failed: <cause>";
    the cause is what a reader needs.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    if line.endswith(":") and len(lines) > 1:
        line = f"{line} {lines[1]}"
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def _tail(text: str) -> str:
    lines = text.strip().splitlines()[-_DETAIL_LINES:]
    out = "\n".join(lines)
    return out[-_DETAIL_CHARS:]
