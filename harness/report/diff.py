"""Two cell reports compared: what regressed, what was fixed, what changed underneath.

``harness report diff A B`` answers the questions a reviewer asks of a new torch
release, a driver update or another vendor's run, in order of urgency:
regressions (passed in A, failed in B) first, then fixes, newly waived tests,
failures of tests A did not pass or run, tests that passed in A and no longer
run, ops that are DTensor's own failure on one side only (what differs between
world sizes or torch versions, with the failure's first error), the pass counts (and op coverage) per capability, and the differences of
the machines' fingerprints (torch, driver, collective library versions) and of
the cells. Reports of different schema versions are refused: their outcomes do
not mean the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.report import bundle, views

FAILED = ("failed", "error")
#: Fingerprint facts a reader looks at first; the rest follow in their own order.
FIRST = (
    "torch.version",
    "torch.git",
    "torch.build",
    "torch.backend",
    "torch.backends",
    "torch.device.driver",
    "torch.device.names",
    "torch.device.count",
)
_LIST_LIMIT = 100  # per section in text and Markdown; JSON has every entry


def load(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """A cell report folder (or its report.json) and its report."""
    path = Path(path)
    folder = path.parent if path.is_file() and path.name == bundle.REPORT else path
    report = bundle.load(folder)
    if report.get("kind") != "cell":
        raise UsageError(
            f"{folder} holds a matrix report, which keeps no per-test results; "
            f"diff the cells' folders (results/CELL) instead."
        )
    return folder, report


def compare_folders(a: str | Path, b: str | Path) -> dict[str, Any]:
    """Load, check and compare two report folders; each side's integrity is noted."""
    (folder_a, report_a), (folder_b, report_b) = load(a), load(b)
    version_a, version_b = report_a["schema"].get("version"), report_b["schema"].get("version")
    if version_a != version_b:
        raise UsageError(
            f"{folder_a} is report schema {version_a}, {folder_b} is schema {version_b}; "
            f"diff reports of one schema (certify both with the same dtensor-harness)."
        )
    result = compare(report_a, report_b)
    for side, folder in (("a", folder_a), ("b", folder_b)):
        result[side]["path"] = str(folder)
        result[side]["problems"] = bundle.verify(folder).problems
    return result


def compare_paths(a: str | Path, b: str | Path) -> dict[str, Any]:
    """Two cell report folders, or two folders of them (results/): cells paired by name."""
    if _is_report(a) and _is_report(b):
        return compare_folders(a, b)
    from harness.report import merge  # folders of cells, as `report merge` reads them

    cells_a = {load(f)[1]["cell"]["name"]: f for f in merge.find_reports([a])}
    cells_b = {load(f)[1]["cell"]["name"]: f for f in merge.find_reports([b])}
    pairs = [compare_folders(cells_a[n], cells_b[n]) for n in cells_a if n in cells_b]
    return {
        "kind": "matrix",
        "cells": pairs,
        "only_a": sorted(set(cells_a) - set(cells_b)),
        "only_b": sorted(set(cells_b) - set(cells_a)),
        "regressed": any(p["regressed"] for p in pairs),
    }


def _is_report(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() or (path / bundle.REPORT).is_file() or not path.is_dir()


def _tests(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        t["id"]: {**t, "capability": c["name"]}
        for c in report.get("capabilities", [])
        for t in c.get("tests", [])
    }


def _side(report: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "cell": report["cell"].get("name", ""),
        "verdict": report["verdict"],
        "created": report.get("created", ""),
        "harness_version": report.get("harness_version", ""),
        "sha256": report.get("integrity", {}).get("sha256", ""),
        "summary": report.get("summary", {}),
    }


def _change(test_id: str, old: Mapping | None, new: Mapping | None) -> dict[str, Any]:
    either = new or old or {}
    row = {
        "id": test_id,
        "capability": either.get("capability", ""),
        "a": old["outcome"] if old else "absent",
        "b": new["outcome"] if new else "absent",
    }
    if new and new.get("reason"):
        row["reason"] = new["reason"]
    if new and new.get("ran"):
        row["ran"] = new["ran"]
    return row


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """The diff of two cell reports as one JSON-ready dict."""
    old, new = _tests(a), _tests(b)
    sections: dict[str, list[dict[str, Any]]] = {
        "regressions": [],  # passed -> failed or error
        "fixes": [],  # failed, error or waived -> passed
        "newly_waived": [],  # anything else -> waived
        "new_failures": [],  # absent, skipped -> failed or error
        "no_longer_run": [],  # passed -> skipped or absent
        "dtensor_own": [],  # DTensor's own failure on one side only (not the cell's)
    }
    for test_id in sorted(old.keys() | new.keys()):
        was, now = old.get(test_id), new.get(test_id)
        before = was["outcome"] if was else "absent"
        after = now["outcome"] if now else "absent"
        if before == after:
            continue
        if before == "passed" and after in FAILED:
            key = "regressions"
        elif after == "passed" and before in (*FAILED, "waived"):
            key = "fixes"
        elif after == "waived":
            key = "newly_waived"
        elif after in FAILED:
            key = "new_failures"
        elif "own" in (before, after):
            key = "dtensor_own"
        elif before == "passed":
            key = "no_longer_run"
        else:
            continue  # e.g. skipped -> absent, waived -> skipped: not a finding
        row = _change(test_id, was, now)
        if key == "newly_waived":
            entries = (b.get("waivers") or {}).get("entries", [])
            index = now.get("waiver")
            if isinstance(index, int) and 0 <= index < len(entries):
                row["waiver"] = {k: entries[index][k] for k in ("reason", "issue")}
        if key == "dtensor_own" and before == "own":  # why it failed in A
            row["reason"] = was.get("reason", "")
        sections[key].append(row)
    return {
        "a": _side(a),
        "b": _side(b),
        **sections,
        "capabilities": capabilities(a, b),
        "fingerprint": differences(a.get("fingerprint", {}), b.get("fingerprint", {}), FIRST),
        "cell": differences(a.get("cell", {}), b.get("cell", {})),
        "reference": differences(_reference(a), _reference(b)),
        "regressed": bool(sections["regressions"]),
    }


def _reference(report: Mapping[str, Any]) -> dict[str, Any]:
    """What a reader compares of two references: which record, for what, its size."""
    section = report.get("reference") or {}
    keys = ("source", "path", "torch", "world_size", "sha256", "own")
    return {k: section[k] for k in keys if k in section}


_CAP_KEYS = ("verdict", "passed", "failed", "error", "skipped", "waived", "own", "total")


def capabilities(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per capability: counts in A and in B, the change of passed tests, and coverage."""
    caps_a = {c["name"]: c for c in a.get("capabilities", [])}
    caps_b = {c["name"]: c for c in b.get("capabilities", [])}
    names = list(caps_a) + [n for n in caps_b if n not in caps_a]
    rows = []
    for name in names:
        ca, cb = caps_a.get(name), caps_b.get(name)
        row: dict[str, Any] = {"name": name, "title": (cb or ca)["title"]}
        for side, cap in (("a", ca), ("b", cb)):
            row[side] = {k: cap.get(k, 0) for k in _CAP_KEYS} if cap else None
            if cap and isinstance(cap.get("coverage"), Mapping):
                row[side]["coverage"] = dict(cap["coverage"])
        row["passed_change"] = (cb or {}).get("passed", 0) - (ca or {}).get("passed", 0)
        row["changes"] = {
            k: (cb or {}).get(k, 0) - (ca or {}).get(k, 0)
            for k in _CAP_KEYS[1:]
            if (cb or {}).get(k, 0) != (ca or {}).get(k, 0)
        }
        row["changed"] = row["a"] != row["b"]
        rows.append(row)
    return rows


def differences(
    a: Mapping[str, Any], b: Mapping[str, Any], first: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Leaves of two nested dicts that differ, the ``first`` prefixes leading."""
    left, right = dict(views.flatten(a)), dict(views.flatten(b))
    keys = [k for k in dict.fromkeys([*left, *right]) if left.get(k) != right.get(k)]

    def rank(key: str) -> int:
        hits = [i for i, p in enumerate(first) if key == p or key.startswith(p + ".")]
        return hits[0] if hits else len(first)

    return [
        {"key": k, "a": left.get(k), "b": right.get(k)}
        for k in sorted(keys, key=lambda k: (rank(k), keys.index(k)))
    ]


# --- rendering ------------------------------------------------------------------------------

TITLES = {
    "regressions": "Regressions (passed -> failed)",
    "fixes": "Fixes (failed -> passed)",
    "newly_waived": "Newly waived",
    "new_failures": "New failures (not passed or not run in A)",
    "no_longer_run": "No longer run (passed in A; skipped or absent in B)",
    "dtensor_own": "DTensor's own failure on one side only (it fails on that side's reference too)",
}


def _outcome_change(row: Mapping[str, Any]) -> str:
    ran = f" (ran: {row['ran']})" if row.get("ran") else ""
    return f"{row['a']} -> {row['b']}{ran}"


def _why(row: Mapping[str, Any]) -> str:
    waiver = row.get("waiver")
    if waiver:
        return f"{waiver['reason']} <{waiver['issue']}>"
    return row.get("reason", "")


def _count(value: Any) -> str:
    if value is None:
        return "not run"
    text = f"{value['passed']}/{value['total']} passed"
    coverage = value.get("coverage")
    if coverage:
        text += " (coverage " + ", ".join(f"{k} {v}" for k, v in coverage.items()) + ")"
    return text


def _mark(cap: Mapping[str, Any]) -> str:
    """What changed in a capability: the counts that moved, or its verdict, or '='."""
    if not cap["changed"]:
        return "="
    moved = ", ".join(f"{k} {v:+d}" for k, v in cap["changes"].items())
    if moved:
        return moved
    if cap["a"] is None or cap["b"] is None:
        return "added" if cap["a"] is None else "gone"
    return f"verdict {cap['a']['verdict']} -> {cap['b']['verdict']}"


def _summary_line(diff: Mapping[str, Any]) -> str:
    words = {"dtensor_own": "DTensor's own on one side"}
    counts = ", ".join(f"{len(diff[k])} {words.get(k, k.replace('_', ' '))}" for k in TITLES)
    return f"verdict {diff['a']['verdict']} -> {diff['b']['verdict']}; {counts}"


def text(diff: Mapping[str, Any]) -> str:
    out = []
    for side in ("a", "b"):
        s = diff[side]
        out.append(
            f"{side.upper()}: {s.get('path', '')} ({s['cell']}, {s['verdict']}, {s['created']}, "
            f"dtensor-harness {s['harness_version']})"
        )
        if s.get("problems"):
            out.append(
                f"   warning: edited after it was made ({len(s['problems'])} problem(s)); "
                f"see harness report verify {s.get('path', '')}"
            )
    for key, title in TITLES.items():
        rows = diff[key]
        out += ["", f"{title}: {len(rows) or 'none'}"]
        for row in rows[:_LIST_LIMIT]:
            why = _why(row)
            out.append(f"  {row['id']}  {_outcome_change(row)}" + (f": {why}" if why else ""))
        if len(rows) > _LIST_LIMIT:
            out.append(f"  ... {len(rows) - _LIST_LIMIT} more (--format json lists all)")
    out += ["", "Capabilities (A -> B):"]
    width = max((len(c["title"]) for c in diff["capabilities"]), default=10)
    for cap in diff["capabilities"]:
        out.append(
            f"  {cap['title']:<{width}}  {_count(cap['a'])} -> {_count(cap['b'])}  {_mark(cap)}"
        )
    for key, title in (("fingerprint", "Machine"), ("cell", "Cell"), ("reference", "Reference")):
        out += ["", f"{title} differences: {len(diff.get(key, [])) or 'none'}"]
        out += [f"  {d['key']}: {d['a']} -> {d['b']}" for d in diff.get(key, [])]
    out += ["", _summary_line(diff)]
    return "\n".join(out) + "\n"


def render(diff: Mapping[str, Any], fmt: str) -> str:
    """Text or Markdown of a cell diff, or of every pair of a matrix diff."""
    one = markdown if fmt == "markdown" else text
    if diff.get("kind") != "matrix":
        return one(diff)
    parts = [one(cell) for cell in diff["cells"]]
    for side, key in (("A", "only_a"), ("B", "only_b")):
        if diff[key]:
            parts.append(f"Only in {side}: {', '.join(diff[key])}\n")
    regressed = [c["b"]["cell"] for c in diff["cells"] if c["regressed"]]
    parts.append(
        f"{len(diff['cells'])} cells compared; regressed: {', '.join(regressed) or 'none'}\n"
    )
    return ("\n---\n\n" if fmt == "markdown" else "\n").join(parts)


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(diff: Mapping[str, Any]) -> str:
    a, b = diff["a"], diff["b"]
    head = "regressed" if diff["regressed"] else "no regressions"
    out = [
        f"## DTensor certification diff: {a['cell']} -> {b['cell']} ({head})",
        "",
        "| | report | verdict | made | sha256 |",
        "|---|---|---|---|---|",
    ]
    for side, s in (("A", a), ("B", b)):
        edited = " (**edited**)" if s.get("problems") else ""
        out.append(
            f"| {side} | `{_md(s.get('path', ''))}`{edited} | {s['verdict']} | {s['created']} "
            f"| `{s['sha256'][:16]}` |"
        )
    out += ["", f"**{_md(_summary_line(diff))}**", ""]
    for key, title in TITLES.items():
        rows = diff[key]
        if not rows:
            continue
        out += [f"### {title}: {len(rows)}", "", "| test | A -> B | why |", "|---|---|---|"]
        out += [
            f"| `{_md(r['id'])}` | {_md(_outcome_change(r))} | {_md(_why(r))} |"
            for r in rows[:_LIST_LIMIT]
        ]
        if len(rows) > _LIST_LIMIT:
            out.append(f"| ... {len(rows) - _LIST_LIMIT} more | | |")
        out.append("")
    out += ["### Capabilities", "", "| capability | A | B | change |", "|---|---|---|---|"]
    for cap in diff["capabilities"]:
        out.append(
            f"| {_md(cap['title'])} | {_count(cap['a'])} | {_count(cap['b'])} | {_mark(cap)} |"
        )
    for key, title in (("fingerprint", "Machine"), ("cell", "Cell"), ("reference", "Reference")):
        if diff.get(key):
            out += ["", f"### {title} differences", "", "| fact | A | B |", "|---|---|---|"]
            out += [f"| {_md(d['key'])} | `{_md(d['a'])}` | `{_md(d['b'])}` |" for d in diff[key]]
    return "\n".join(out) + "\n"
