"""The report document: its versioned schema, verdicts and canonical digest.

One dict, written as report.json. Its sha256 is taken over a canonical form
(keys sorted, no whitespace, UTF-8) of everything but the ``integrity`` block,
and each top-level section also gets its own digest, so verify can say *what*
was edited, not only *that* something was.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from harness._version import __version__
from harness.outcomes import ReportVerdict
from harness.report import capabilities
from harness.report.junit import CaseResult

SCHEMA = "dtensor-harness/report"
# Version 2 (dtensor-harness 0.2.0): counts gain ``waived`` (a failure a waiver
# covers: neither pass nor fail); a waived test keeps what JUnit said in ``ran``;
# the report gains a ``waivers`` section; a capability may carry ``coverage`` and
# ``ran_on`` (where the ops ran: simulating workers or the cell's ranks).
# Tools that compare reports (``harness report diff``) refuse two versions.
# Version 3 (0.3.0): ``own`` counts the ops DTensor fails on the reference too (a
# failure that is not the cell's: counted apart, never against it; the test keeps what
# it ran to in ``ran``); the report gains a ``reference`` section (the record used,
# its source and sha256, sealed; docs/certification.md).
SCHEMA_VERSION = 3
INTEGRITY = "integrity"
#: What a capability and the summary count, one key per outcome a test can end in.
COUNTS = ("passed", "failed", "error", "skipped", "waived", "own")

# Verdicts, worst first. A capability with no test run (every test skipped) is
# "skip": it is neither certified nor failed, and the report says why.
FAIL, PASS, SKIP = ReportVerdict.FAIL, ReportVerdict.PASS, ReportVerdict.SKIP
INCOMPLETE = ReportVerdict.INCOMPLETE  # the run itself broke off (interrupted / internal error)


def canonical(data: Any) -> bytes:
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content(report: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != INTEGRITY}


def seal(report: dict[str, Any]) -> dict[str, Any]:
    """Add the integrity block: a digest over the whole content and per section."""
    body = content(report)
    report[INTEGRITY] = {
        "algorithm": "sha256",
        "canonical": "JSON, keys sorted, separators (',', ':'), UTF-8, integrity block left out",
        "sha256": sha256(canonical(body)),
        "sections": {key: sha256(canonical(value)) for key, value in sorted(body.items())},
    }
    return report


def now() -> str:
    return (
        _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    )


def capability_verdict(counts: Mapping[str, int]) -> str:
    if counts.get("failed", 0) or counts.get("error", 0):
        return FAIL
    return PASS if counts.get("passed", 0) else SKIP


def overall_verdict(verdicts: Iterable[str], exit_code: int | None = None) -> str:
    verdicts = list(verdicts)
    if FAIL in verdicts:
        return FAIL
    if exit_code not in (None, 0, 1, 5):  # interrupted, internal or usage error
        return INCOMPLETE
    return PASS if PASS in verdicts else SKIP


def summarize(results: Iterable[CaseResult]) -> list[dict[str, Any]]:
    """Group results by capability, in the report's order, with counts and verdicts."""
    groups: dict[str, list[CaseResult]] = {}
    for result in results:
        groups.setdefault(result.capability, []).append(result)
    out = []
    for name in capabilities.order(groups):
        tests = groups[name]
        counts = dict.fromkeys(COUNTS, 0)
        for test in tests:
            counts[test.outcome] += 1
        out.append(
            {
                "name": name,
                "title": capabilities.title(name),
                "verdict": capability_verdict(counts),
                **counts,
                "total": len(tests),
                "duration_s": round(sum(t.duration_s for t in tests), 3),
                "tests": [t.to_dict() for t in tests],
            }
        )
        coverage = capabilities.op_coverage(tests)
        if coverage:
            out[-1]["coverage"] = coverage
        ran_on = next((t.ran_on for t in tests if t.ran_on), "")
        if ran_on:
            out[-1]["ran_on"] = ran_on
    return out


def build(
    *,
    cell: Mapping[str, Any],
    matrix: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    results: Iterable[CaseResult],
    run: Mapping[str, Any],
    artifacts: Mapping[str, str],
    waivers: Mapping[str, Any] | None = None,
    reference: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A sealed cell report. ``run`` holds the command, exit code and wall time;
    ``waivers`` the waivers file that was applied (None: none was); ``reference`` the
    reference the ops were judged against (None: none was)."""
    caps = summarize(results)
    totals = {k: sum(c[k] for c in caps) for k in COUNTS}
    report = {
        "schema": {"name": SCHEMA, "version": SCHEMA_VERSION},
        "kind": "cell",
        "harness_version": __version__,
        "created": now(),
        "cell": dict(cell),
        "matrix": dict(matrix),
        "fingerprint": dict(fingerprint),
        "run": dict(run),
        "verdict": overall_verdict((c["verdict"] for c in caps), run.get("exit_code")),
        "summary": {
            **totals,
            "total": sum(totals.values()),
            "duration_s": round(sum(c["duration_s"] for c in caps), 3),
        },
        "capabilities": caps,
        "artifacts": dict(artifacts),
        "waivers": dict(waivers) if waivers is not None else None,
        "reference": dict(reference) if reference is not None else None,
    }
    return seal(report)
