"""Waivers: failures a vendor declares known, each with a reason and an issue link.

A waivers file is TOML, one ``[[waiver]]`` table per known failure::

    [[waiver]]
    test = "harness/conformance/test_collectives.py::CollectivesTest::test_all_to_all"
    reason = "all_to_all with uneven splits is not in our collective library yet"
    issue = "https://github.com/acme/collectives/issues/42"

    [[waiver]]
    op = "nonzero"            # every test the op-coverage capability tags with this op
    reason = "data-dependent output shape: no sharding strategy on our backend"
    issue = "https://github.com/acme/torch-acme/issues/7"

``test`` is a test id as report.json writes it; ``*`` stands for any characters
(``...::test_op[*]`` covers every parametrization), nothing else is special.
``op`` matches the ``op`` a test carries (JUnit property ``op``).

Applied to a run's results, a failed or errored test that a waiver matches is
reported ``waived``: neither pass nor fail, so the cell can still pass, but the
report keeps what it ran to and which waiver covered it. A waiver whose tests
now pass is ``stale`` (remove it); one that matches no test that ran is
``unused`` (its test is gone, renamed or skipped). The file is copied into the
report folder and its sha256 sealed in the report, so a reader sees exactly
which failures the vendor waived and verify can replay the waiving.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.report import inputs, schema
from harness.report.junit import CaseResult

#: The copy in a report folder (SHA256SUMS covers it).
FILE = "waivers.toml"
#: Keys of one ``[[waiver]]``: what it matches (one of), and what explains it.
MATCH_KEYS = ("test", "op")
KEYS = (*MATCH_KEYS, "reason", "issue")
TOP_KEYS = ("waiver",)

USED, STALE, UNUSED = "used", "stale", "unused"
FAILED = ("failed", "error")

# path.py, then ::Name(::Name)* with an optional [parametrization] ("path.py"
# alone is a file that does not import); "*" may stand anywhere.
_TEST_ID = re.compile(r"^[^\s:\[\]]+\.py((::[\w*]+)+(\[[^\n]*\])?)?$")
_OP = re.compile(r"^[\w.*-]+(:[\w.*-]+)?$")  # name, or name:variant (ops capability)
_URL = re.compile(r"^https?://\S+$")


@dataclasses.dataclass(frozen=True)
class Waiver:
    kind: str  # "test" or "op"
    pattern: str
    reason: str
    issue: str

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile("^" + ".*".join(map(re.escape, self.pattern.split("*"))) + "$")

    def matches(self, result: CaseResult | Mapping[str, Any]) -> bool:
        get = result.get if isinstance(result, Mapping) else lambda k: getattr(result, k, "")
        value = get("id") if self.kind == "test" else get("op")
        return bool(value) and self.regex.match(value) is not None

    def to_dict(self) -> dict[str, str]:
        return {self.kind: self.pattern, "reason": self.reason, "issue": self.issue}


@dataclasses.dataclass(frozen=True)
class Waivers:
    """A parsed waivers file: its entries, where it came from and its sha256."""

    entries: tuple[Waiver, ...]
    source: str
    sha256: str
    text: bytes


def load(path: str | Path) -> Waivers:
    """Read and check a waivers file; any problem is one UsageError line."""
    path = Path(path)
    fix = "pass --waivers FILE or fix `waivers` in the matrix"
    return parse(inputs.read(path, "waivers file", fix), str(path))


def for_cell(cell: Any, override: str | None = None) -> Waivers | None:
    """The waivers a run of ``cell`` applies: ``override`` (--waivers), else the cell's
    ``waivers`` (relative to its matrix file), else none."""
    if override:
        return load(override)
    return load(Path(cell.root) / cell.waivers) if getattr(cell, "waivers", "") else None


def parse(raw: bytes, source: str) -> Waivers:
    data = inputs.tables(raw, source)
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise UsageError(
            f"{source}: unknown key {unknown[0]!r}; a waivers file holds only [[waiver]] tables."
        )
    tables = data.get("waiver", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise UsageError(f"{source}: write each waiver as a [[waiver]] table.")
    entries = tuple(_entry(table, f"{source}: waiver {n}") for n, table in enumerate(tables, 1))
    return Waivers(entries=entries, source=source, sha256=schema.sha256(raw), text=raw)


def _entry(table: Mapping[str, Any], where: str) -> Waiver:
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; a waiver takes {', '.join(KEYS)}.")
    kinds = [k for k in MATCH_KEYS if k in table]
    if len(kinds) != 1:
        raise UsageError(f"{where}: give exactly one of `test` or `op` (it has {len(kinds)}).")
    kind = kinds[0]
    for key in (kind, "reason", "issue"):
        value = table.get(key)
        if not isinstance(value, str) or not value.strip():
            raise UsageError(
                f"{where}: missing {key!r}; every waiver needs {kind}, reason and issue."
            )
    pattern = table[kind].strip()
    if kind == "test" and not _TEST_ID.match(pattern):
        raise UsageError(
            f"{where}: malformed test id {pattern!r}; write it as report.json does, "
            f'path/test_file.py::Class::test_name ("*" for any characters).'
        )
    if kind == "op" and not _OP.match(pattern):
        raise UsageError(
            f"{where}: malformed op name {pattern!r}; write an OpInfo name such as "
            f"'nn.functional.relu', or name:variant such as 'max:reduction_with_dim'."
        )
    if not _URL.match(table["issue"].strip()):
        raise UsageError(
            f"{where}: issue {table['issue']!r} is not a link; give the issue's http(s) URL."
        )
    return Waiver(kind, pattern, table["reason"].strip(), table["issue"].strip())


# --- applying -------------------------------------------------------------------------------


def apply(
    waivers: Waivers | None, results: Iterable[CaseResult]
) -> tuple[list[CaseResult], dict[str, Any] | None]:
    """Results with covered failures waived, and the report's ``waivers`` section."""
    results = list(results)
    if waivers is None:
        return results, None
    matched: list[list[CaseResult]] = [[] for _ in waivers.entries]
    out = []
    for result in results:
        hits = [i for i, w in enumerate(waivers.entries) if w.matches(result)]
        for i in hits:
            matched[i].append(result)
        if hits and result.outcome in FAILED:
            result = dataclasses.replace(
                result, outcome="waived", ran=result.outcome, waiver=hits[0]
            )
        out.append(result)
    entries = []
    for waiver, tests in zip(waivers.entries, matched):
        entries.append(
            {
                **waiver.to_dict(),
                "status": status(t.outcome for t in tests),
                "matched": {
                    o: sum(1 for t in tests if t.outcome == o) for o in ("passed", *FAILED)
                },
                "tests": sorted(t.id for t in tests if t.outcome in FAILED)[:50],
            }
        )
    section = {
        "source": waivers.source,
        "file": FILE,
        "sha256": waivers.sha256,
        "entries": entries,
        "counts": {s: sum(1 for e in entries if e["status"] == s) for s in (USED, STALE, UNUSED)},
    }
    return out, section


def status(outcomes: Iterable[str]) -> str:
    """used: it waived a failure; stale: its tests pass now; unused: no test it names ran."""
    seen = set(outcomes)
    if seen & set(FAILED):
        return USED
    return STALE if "passed" in seen else UNUSED


def write(folder: str | Path, waivers: Waivers | None) -> None:
    """Put the applied file in the report folder, byte for byte (its sha256 is sealed);
    with none applied, remove one an earlier report left, so no file misleads."""
    if waivers is None:
        (Path(folder) / FILE).unlink(missing_ok=True)
    else:
        (Path(folder) / FILE).write_bytes(waivers.text)


# --- verifying ------------------------------------------------------------------------------


def problems(folder: str | Path, report: Mapping[str, Any], results: list[CaseResult] | None):
    """What verify finds wrong with a cell report's waivers.

    ``results`` are junit.xml's (None when the folder has none): the waiving is
    replayed from the folder's waivers.toml and must give the report's outcomes.
    """
    section = report.get("waivers")
    waived = [
        t
        for c in report.get("capabilities", [])
        for t in c.get("tests", [])
        if t.get("outcome") == "waived"
    ]
    if not section:
        return [f"test {t['id']}: waived, but the report has no waivers" for t in waived[:5]]
    path = Path(folder) / FILE
    if not path.is_file():
        return [f"{FILE} is missing; the report's waivers cannot be checked"]
    raw = path.read_bytes()
    if schema.sha256(raw) != section.get("sha256"):
        return [f"{FILE}: sha256 differs from the one sealed in the report (edited)"]
    try:
        waivers = parse(raw, FILE)
    except UsageError as exc:
        return [str(exc)]
    if results is None:
        return []
    replayed, again = apply(waivers, results)
    found = []
    if again["entries"] != section.get("entries"):
        found.append("waivers: the report's waiver statuses do not follow from junit.xml")
    said = {t["id"]: t for c in report.get("capabilities", []) for t in c.get("tests", [])}
    for result in replayed:
        test = said.get(result.id)
        if test is not None and test.get("outcome") != result.outcome:
            found.append(
                f"test {result.id}: report says {test.get('outcome')}, the waivers give {result.outcome}"
            )
    return found
