"""JUnit XML as pytest writes it: the kit's one reader, and the merge of ranks' files.

Torch-free and below both users: the report (:mod:`harness.report.junit` turns
cases into results with capabilities) and the launcher's rank 0
(:mod:`harness.ranks.external_main` merges every rank's file). One case's
outcome is read one way everywhere: an ``error`` outranks a ``failure``
outranks a ``skipped`` (an error in teardown after a failed test is an error).
The suite's name is the cell's (``harness run`` sets it), so a results folder
says which cell it holds.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UsageError
from harness.outcomes import Outcome

#: JUnit's element for each outcome but a pass, worst first.
TAGS: dict[Outcome, str] = {
    Outcome.ERROR: "error",
    Outcome.FAILED: "failure",
    Outcome.SKIPPED: "skipped",
}
_SEVERITY = {Outcome.ERROR: 3, Outcome.FAILED: 2, Outcome.SKIPPED: 1, Outcome.PASSED: 0}


@dataclass(frozen=True)
class Case:
    """One ``<testcase>``: who it is, how it ended, and what JUnit said about it."""

    classname: str
    name: str
    outcome: Outcome
    seconds: float = 0.0
    message: str = ""  # the result element's message, else its text
    text: str = ""  # the result element's text (a traceback)
    kind: str = ""  # the result element's type (pytest.xfail for an expected failure)
    properties: dict[str, str] = field(default_factory=dict)


def read(path: str | Path) -> ET.Element:
    """The document's root; one UsageError line when it is missing or not XML."""
    path = Path(path)
    try:
        return ET.parse(path).getroot()
    except FileNotFoundError:
        raise UsageError(
            f"no JUnit XML at {path}; run the cell first (`harness run CELL`)."
        ) from None
    except ET.ParseError as exc:
        raise UsageError(f"{path} is not valid JUnit XML ({exc}); rerun the cell.") from None


def cases(path: str | Path) -> list[Case]:
    """Every test case of a JUnit file, in order."""
    return [case_of(element) for element in read(path).iter("testcase")]


def suite_name(path: str | Path) -> str | None:
    """The name of the file's (first) test suite: the cell it ran, for a kit run."""
    root = read(path)
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    return None if suite is None else suite.get("name")


def outcome_of(element: ET.Element) -> Outcome:
    """A case's outcome: its worst result element, or passed."""
    for outcome, tag in TAGS.items():
        if element.find(tag) is not None:
            return outcome
    return Outcome.PASSED


def case_of(element: ET.Element) -> Case:
    outcome = outcome_of(element)
    node = element.find(TAGS[outcome]) if outcome in TAGS else None
    return Case(
        classname=element.get("classname", ""),
        name=element.get("name", ""),
        outcome=outcome,
        seconds=float(element.get("time") or 0.0),
        message="" if node is None else node.get("message") or (node.text or "").strip(),
        text="" if node is None else node.text or "",
        kind="" if node is None else node.get("type", ""),
        properties={p.get("name"): p.get("value", "") for p in element.iter("property")},
    )


# -- the launcher's merge ---------------------------------------------------------------
def _ranks(numbers: list[int]) -> str:
    return ("rank " if len(numbers) == 1 else "ranks ") + ", ".join(map(str, sorted(numbers)))


def merge(
    per_rank: dict[int, bytes], missing: dict[int, str], suite_name: str = "harness"
) -> bytes:
    """One JUnit document from ``{rank: junit bytes}``; ``missing``: rank -> why absent.

    Tests that went through the bases were agreed on, so every rank holds the
    same outcome and rank 0's entry stands for all. A test outside the bases (a
    plain pytest function) runs on each rank alone: the worst outcome wins and
    its message says which ranks saw it. A rank that sent no file at all becomes
    an error entry of its own, so a partial merge never reads as a clean run.
    """
    found: dict[tuple[str, str], dict[int, ET.Element]] = {}
    unreadable: dict[int, str] = dict(missing)
    for rank in sorted(per_rank):
        try:
            root = ET.fromstring(per_rank[rank])
        except ET.ParseError as exc:
            unreadable[rank] = f"its JUnit XML does not parse ({exc})"
            continue
        for case in root.iter("testcase"):
            key = (case.get("classname", ""), case.get("name", ""))
            found.setdefault(key, {})[rank] = case

    suite = ET.Element("testsuite", name=suite_name)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total = 0.0
    for by_rank in found.values():
        case = _merged_case(by_rank)
        suite.append(case)
        outcome = outcome_of(case)
        counts["tests"] += 1
        counts["failures"] += outcome == Outcome.FAILED
        counts["errors"] += outcome == Outcome.ERROR
        counts["skipped"] += outcome == Outcome.SKIPPED
        total += float(case.get("time") or 0.0)
    for rank, why in sorted(unreadable.items()):
        case = ET.SubElement(
            suite, "testcase", classname="harness.external", name=f"rank {rank}", time="0"
        )
        ET.SubElement(case, "error", message=f"rank {rank} sent no report: {why}").text = why
        counts["tests"] += 1
        counts["errors"] += 1
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("time", f"{total:.3f}")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def failed(merged: bytes) -> bool:
    """Whether a merged document holds a failure or an error."""
    suite = ET.fromstring(merged).find("testsuite")
    return suite is not None and (suite.get("failures"), suite.get("errors")) != ("0", "0")


def _merged_case(by_rank: dict[int, ET.Element]) -> ET.Element:
    outcomes = {rank: outcome_of(case) for rank, case in by_rank.items()}
    worst = max(outcomes.values(), key=_SEVERITY.__getitem__)
    first = min(r for r, o in outcomes.items() if o == worst)
    case = by_rank[first]
    slowest = max(float(c.get("time") or 0.0) for c in by_rank.values())
    case.set("time", f"{slowest:.3f}")
    props = case.find("properties")
    if props is None:
        props = ET.SubElement(case, "properties")
    ET.SubElement(props, "property", name="ranks", value=",".join(map(str, sorted(by_rank))))
    differ = len(set(outcomes.values())) > 1 and worst != Outcome.PASSED
    if differ:
        tag = TAGS[worst]
        node = case.find(tag)
        these = [r for r, o in outcomes.items() if o == worst]
        note = f"on {_ranks(these)} of {_ranks(list(by_rank))}"
        if node is not None:
            node.set("message", f"{note}: {node.get('message', '')}".rstrip(": "))
            if worst != Outcome.SKIPPED:
                node.text = "\n".join(f"--- rank {r} ---\n{_text(by_rank[r], tag)}" for r in these)
    return case


def _text(case: ET.Element, tag: str) -> str:
    node = case.find(tag)
    return "" if node is None else (node.text or node.get("message", "")).strip()
