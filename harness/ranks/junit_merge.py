"""Every rank's JUnit XML -> one, on rank 0, in the shape the report reads.

Tests that went through the bases were agreed on, so every rank holds the same
outcome and rank 0's entry stands for all. A test outside the bases (a plain
pytest function) runs on each rank alone: the worst outcome wins (error, then
failure, then skip) and its message says which ranks saw it. A rank that sent
no file at all becomes an error entry of its own, so a partial merge never
reads as a clean run.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

_RANK = {"error": 3, "failure": 2, "skipped": 1, "passed": 0}


def _outcome(case: ET.Element) -> str:
    for tag in ("error", "failure", "skipped"):
        if case.find(tag) is not None:
            return tag
    return "passed"


def _ranks(numbers: list[int]) -> str:
    return ("rank " if len(numbers) == 1 else "ranks ") + ", ".join(map(str, sorted(numbers)))


def merge(
    per_rank: dict[int, bytes], missing: dict[int, str], suite_name: str = "harness"
) -> bytes:
    """One JUnit document from ``{rank: junit bytes}``; ``missing``: rank -> why absent."""
    cases: dict[tuple[str, str], dict[int, ET.Element]] = {}
    unreadable: dict[int, str] = dict(missing)
    for rank in sorted(per_rank):
        try:
            root = ET.fromstring(per_rank[rank])
        except ET.ParseError as exc:
            unreadable[rank] = f"its JUnit XML does not parse ({exc})"
            continue
        for case in root.iter("testcase"):
            key = (case.get("classname", ""), case.get("name", ""))
            cases.setdefault(key, {})[rank] = case

    suite = ET.Element("testsuite", name=suite_name)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total = 0.0
    for by_rank in cases.values():
        case = _merged_case(by_rank)
        suite.append(case)
        outcome = _outcome(case)
        counts["tests"] += 1
        counts["failures"] += outcome == "failure"
        counts["errors"] += outcome == "error"
        counts["skipped"] += outcome == "skipped"
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
    outcomes = {rank: _outcome(case) for rank, case in by_rank.items()}
    worst = max(outcomes.values(), key=_RANK.__getitem__)
    first = min(r for r, o in outcomes.items() if o == worst)
    case = by_rank[first]
    slowest = max(float(c.get("time") or 0.0) for c in by_rank.values())
    case.set("time", f"{slowest:.3f}")
    props = case.find("properties")
    if props is None:
        props = ET.SubElement(case, "properties")
    ET.SubElement(props, "property", name="ranks", value=",".join(map(str, sorted(by_rank))))
    differ = len(set(outcomes.values())) > 1 and worst != "passed"
    if differ:
        node = case.find(worst)
        these = [r for r, o in outcomes.items() if o == worst]
        note = f"on {_ranks(these)} of {_ranks(list(by_rank))}"
        if node is not None:
            node.set("message", f"{note}: {node.get('message', '')}".rstrip(": "))
            if worst != "skipped":
                node.text = "\n".join(
                    f"--- rank {r} ---\n{_text(by_rank[r], worst)}" for r in these
                )
    return case


def _text(case: ET.Element, tag: str) -> str:
    node = case.find(tag)
    return "" if node is None else (node.text or node.get("message", "")).strip()
