"""References: DTensor's own op failures per torch and world size, and verdicts against them.

A cell fails an op only where the reference passes it. The reference of a cell is
the same ops sweep (same samples, layouts, world size and torch) on CPU under
LocalTensor, with no vendor plugin loaded. A *record* writes references down, one
TOML file per torch, one ``[world.N]`` table per world size::

    schema = 2
    torch = "2.13"

    [skip]                      # ops no sweep compares (uninitialised memory)
    "empty" = "uninitialised memory: no value to compare"

    [slow]                      # seconds on one core: workers start these first
    "nn.functional.gaussian_nll_loss" = 118

    [world.2]
    checked = "all"             # every op of the database ran; else a list of op keys
    made = "harness reference make ref-ws2.xml --world-size 2 (2026-12-07)"

    [world.2.own]               # DTensor's own failures at world size 2: op = first error
    "argmax" = "sample 3, input placements [S(0)]: shape '[1, 4, 2]' is invalid ..."

The kit ships records (``harness/conformance/xfails/``); others are computed on first
use and cached (:mod:`harness.references`). Applied to a run's results, a failed op the
reference fails too becomes ``own`` (DTensor's own: counted apart, never against the
cell). The record used is copied into the report folder as ``reference.toml`` and its
sha256 sealed, so ``harness report verify`` replays the verdicts.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.outcomes import Outcome
from harness.report import inputs, schema
from harness.report.junit import CaseResult

#: The record's format. 1: one ``[xfail]`` list found at one world size; 2: ``[world.N]``.
SCHEMA = 2
#: The copy in a report folder (SHA256SUMS covers it).
FILE = "reference.toml"
#: Shipped records, one per torch minor: ``torch-<major>.<minor>.toml``.
SHIPPED = Path(__file__).resolve().parent.parent / "conformance" / "xfails"
TOP_KEYS = ("schema", "torch", "skip", "slow", "world")
WORLD_KEYS = ("checked", "made", "own")
FAILED = ("failed", "error")
OWN = Outcome.OWN

#: Where a reference came from, in the order a certification looks for one.
SOURCES = {
    "file": "given with --reference",
    "shipped": "the kit's shipped record",
    "cache": "computed earlier on this machine (user cache)",
    "live": "computed in this run on CPU under LocalTensor, no plugins (now cached)",
    "this run": "this CPU run itself: no record held this torch and world size, so the "
    "run became the record (cached)",
}


@dataclasses.dataclass(frozen=True)
class World:
    """One world size's reference: DTensor's own failures and which ops were checked."""

    own: dict[str, str]
    checked: frozenset[str] | None  # None: every op of the database (a full sweep)
    made: str = ""

    def knows(self, op: str) -> bool:
        return self.checked is None or op in self.checked or op in self.own

    def passes(self, op: str) -> bool:
        """True where the reference ran ``op`` and it did not fail."""
        return self.knows(op) and op not in self.own


@dataclasses.dataclass(frozen=True)
class Record:
    """A parsed record file: per world size, plus the sweep's skips and slow ops."""

    torch: str
    worlds: dict[int, World]
    skip: dict[str, str]
    slow: dict[str, float]
    source: str  # a path, for messages
    text: bytes
    sha256: str

    def at(self, world_size: int) -> World | None:
        return self.worlds.get(world_size)


def load(path: str | Path) -> Record:
    path = Path(path)
    return parse(inputs.read(path, "reference record", "pass --reference FILE"), str(path))


def parse(raw: bytes, source: str) -> Record:
    """Read and check a record; any problem is one UsageError line naming the key."""
    data = inputs.tables(raw, source)
    if data.get("schema") != SCHEMA:
        old = (
            " (schema 1: one [xfail] list at one world size; remake it from a sweep with "
            "`harness reference make JUNIT --world-size N --record FILE`)"
        )
        raise UsageError(
            f"{source}: schema {data.get('schema')!r}; this kit reads record schema {SCHEMA}"
            + (old if data.get("schema") == 1 else "")
        )
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise UsageError(f"{source}: unknown key {unknown[0]!r}; use {', '.join(TOP_KEYS)}")
    if not isinstance(data.get("torch"), str):
        raise UsageError(f"{source}: `torch` must be the torch version, a string")
    worlds = {}
    for key, table in data.get("world", {}).items():
        if not key.isdigit() or int(key) < 1 or not isinstance(table, dict):
            raise UsageError(f"{source}: [world.{key}]: the key must be a world size >= 1")
        worlds[int(key)] = _world(table, f"{source}: [world.{key}]")
    skip = _reasons(data.get("skip", {}), f"{source}: [skip]")
    slow = data.get("slow", {})
    for op, seconds in slow.items():
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise UsageError(f"{source}: [slow] {op!r} needs its seconds (a number > 0)")
    return Record(
        torch=data["torch"],
        worlds=worlds,
        skip=skip,
        slow={k: float(v) for k, v in slow.items()},
        source=source,
        text=raw,
        sha256=schema.sha256(raw),
    )


def _world(table: Mapping[str, Any], where: str) -> World:
    unknown = sorted(set(table) - set(WORLD_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; use {', '.join(WORLD_KEYS)}")
    checked = table.get("checked", "all")
    if checked != "all" and not (
        isinstance(checked, list) and all(isinstance(k, str) for k in checked)
    ):
        raise UsageError(f'{where}: `checked` is "all" or a list of op keys')
    return World(
        own=_reasons(table.get("own", {}), f"{where}.own"),
        checked=None if checked == "all" else frozenset(checked),
        made=str(table.get("made", "")),
    )


def _reasons(table: Any, where: str) -> dict[str, str]:
    if not isinstance(table, dict):
        raise UsageError(f"{where}: must be a table of op = reason")
    for op, reason in table.items():
        if not isinstance(reason, str) or not reason.strip():
            raise UsageError(f"{where}: {op!r} needs a reason (a string)")
    return dict(table)


def shipped_file(version: tuple[int, int], folder: Path | None = None) -> Path | None:
    """The shipped record of this torch minor, or None (an older minor's is not this one's)."""
    path = (folder or SHIPPED) / f"torch-{version[0]}.{version[1]}.toml"
    return path if path.is_file() else None


# --- writing ----------------------------------------------------------------------------------


def dumps(
    torch: str,
    worlds: Mapping[int, World],
    skip: Mapping[str, str],
    slow: Mapping[str, float],
    header: str = "",
) -> str:
    """A record as TOML, world sizes ascending, ops sorted: diffs of records stay small."""
    lines = [*(f"# {line}".rstrip() for line in header.splitlines())]
    lines += [f"schema = {SCHEMA}", f"torch = {json.dumps(torch)}", "", "[skip]"]
    lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(skip.items())]
    if slow:
        lines += ["", "# The slowest ops, seconds on one core: workers start them first.", "[slow]"]
        lines += [f"{json.dumps(k)} = {v:g}" for k, v in sorted(slow.items(), key=lambda i: -i[1])]
    for size in sorted(worlds):
        world = worlds[size]
        checked = "all" if world.checked is None else json.dumps(sorted(world.checked))
        checked = '"all"' if checked == "all" else checked
        lines += ["", f"[world.{size}]", f"checked = {checked}"]
        lines += [f"made = {json.dumps(world.made)}"] if world.made else []
        lines += ["", f"[world.{size}.own]"]
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(world.own.items())]
    return "\n".join(lines) + "\n"


def world_from_results(results: Iterable[CaseResult], made: str = "", full: bool = True) -> World:
    """A world size's reference from a sweep's results: the failed ops, with their first
    error; ``full``: the sweep ran every op (else only the ops that ran to a verdict are
    known: a skipped op, e.g. on a torch without LocalTensor, is not known to pass)."""
    own, ran = {}, set()
    for result in results:
        if not result.op:
            continue
        outcome = result.ran or result.outcome
        if outcome != Outcome.SKIPPED:
            ran.add(result.op)
        if outcome in FAILED or outcome == OWN:
            own[result.op] = first_error(result.reason, result.details)
    return World(own=own, checked=None if full else frozenset(ran), made=made)


_WHERE = re.compile(r"(\S+ sample \d+ with input placements \[[^\]]*\])")


def first_error(reason: str, details: str = "") -> str:
    """A failure's first line, without what a record does not need to repeat; where a
    value differs ("Tensor-likes are not close!"), with the sample and layout it names."""
    text = reason.strip().removeprefix("AssertionError: ")
    if "placements" not in text:
        where = _WHERE.search(details)
        if where:
            text = f"{where.group(1)}: {text}"
    return text[:200] or "fails"


def merged(old: World | None, new: World) -> World:
    """``old`` updated with what ``new`` checked (a cache grows op by op)."""
    if old is None or new.checked is None:
        return new
    checked = None if old.checked is None else old.checked | new.checked
    own = {k: v for k, v in old.own.items() if k not in new.checked}
    own.update(new.own)
    return World(own=own, checked=checked, made=new.made or old.made)


# --- applying ---------------------------------------------------------------------------------


def apply(
    record: Record | None,
    results: Iterable[CaseResult],
    *,
    world_size: int,
    source: str = "",
    path: str = "",
    guards: bool = False,
    note: str = "",
) -> tuple[list[CaseResult], dict[str, Any] | None]:
    """Results with the ops the reference fails too made ``own``, and the report's section.

    ``guards``: the cell is the reference's own kind (CPU, no plugins) and the record
    was shipped: an op the record says passes that fails is a *regression*, and an op
    it says fails that passes makes the record *stale*.
    """
    results = list(results)
    world = record.at(world_size) if record is not None else None
    if world is None:
        return results, (
            {"source": "none", "world_size": world_size, "note": note} if note else None
        )
    out, own, failed_here, unknown, stale = [], [], [], [], []
    for result in results:
        op = result.op
        if op and result.outcome in FAILED:
            if op in world.own:
                result = dataclasses.replace(result, outcome=OWN, ran=result.outcome)
                own.append(op)
            elif world.knows(op):
                failed_here.append(op)
            else:
                unknown.append(op)
        elif op and result.outcome == "passed" and op in world.own:
            stale.append(op)
        out.append(result)
    section = {
        "source": source,
        "means": SOURCES.get(source, ""),
        "path": path,
        "file": FILE,
        "sha256": record.sha256,
        "torch": record.torch,
        "world_size": world_size,
        "made": world.made,
        "guards": guards,
        "own": len(own),
        # failed here, passed on the reference: on a CPU cell with a shipped record a regression
        ("regressions" if guards else "failed_only_here"): sorted(failed_here),
        "unknown": sorted(unknown),  # the reference never ran them: judged alone
        ("stale" if guards else "passed_only_here"): sorted(stale),
    }
    if note:
        section["note"] = note
    return out, section


def write(folder: str | Path, record: Record | None) -> None:
    """The record used, byte for byte, in the report folder (or none, removing an old one)."""
    if record is None:
        (Path(folder) / FILE).unlink(missing_ok=True)
    else:
        (Path(folder) / FILE).write_bytes(record.text)


def replay(
    folder: str | Path, report: Mapping[str, Any], results: list[CaseResult] | None
) -> tuple[list[CaseResult] | None, list[str]]:
    """Verify's side: the results as the sealed reference makes them, and what is wrong."""
    section = report.get("reference") or {}
    owned = [
        t["id"]
        for c in report.get("capabilities", [])
        for t in c.get("tests", [])
        if t.get("outcome") == OWN
    ]
    if not section.get("sha256"):
        problems = [f"test {t}: DTensor's own, but the report seals no reference" for t in owned]
        return results, problems[:5]
    path = Path(folder) / FILE
    if not path.is_file():
        return results, [f"{FILE} is missing; the report's reference cannot be checked"]
    raw = path.read_bytes()
    if schema.sha256(raw) != section["sha256"]:
        return results, [f"{FILE}: sha256 differs from the one sealed in the report (edited)"]
    try:
        record = parse(raw, FILE)
    except UsageError as exc:
        return results, [str(exc)]
    if results is None:
        return None, []
    replayed, again = apply(
        record,
        results,
        world_size=section.get("world_size", 0),
        source=section.get("source", ""),
        path=section.get("path", ""),
        guards=bool(section.get("guards")),
        note=section.get("note", ""),
    )
    problems = []
    if again != section:
        problems.append("reference: the report's reference section does not follow from junit.xml")
    said = set(owned)
    for result in replayed:
        if (result.outcome == OWN) != (result.id in said):
            problems.append(
                f"test {result.id}: report says {'own' if result.id in said else 'not own'}, "
                f"the reference gives {result.outcome}"
            )
    return replayed, problems
