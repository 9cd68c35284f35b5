"""``harness reference make|show``: records of DTensor's own op failures, per world size.

``make`` turns a sweep's JUnit (``harness certify`` on a CPU cell, or ``pytest
harness/conformance/test_ops.py --harness-ops all`` with ``HARNESS_OPS_VERDICTS=raw``)
into the ``[world.N]`` table of a record; ``show`` says which reference a cell's
certification would use. The format: :mod:`harness.report.reference`.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from harness.commands import add_command
from harness.errors import UsageError


def add_parser(sub, parents) -> None:
    parser = sub.add_parser(
        "reference",
        parents=parents,
        help="make or show the records of DTensor's own op failures a certification uses",
    )
    verbs = parser.add_subparsers(dest="reference_command", metavar="VERB", required=True)
    make = add_command(
        verbs,
        "make",
        make_cmd,
        parents,
        help="write a world size's DTensor's own failures into a record from a sweep's JUnit",
        description="Reads the JUnit of an ops sweep on CPU under LocalTensor with no plugin "
        "(every op as it ran: harness certify on a cpu cell writes one) and replaces the "
        "record's [world.N] table: each failed op with its first error. Reasons already in the "
        "record are kept for ops that still fail; review the new ones before shipping.",
    )
    make.add_argument(
        "junit", metavar="JUNIT", help="junit.xml of the sweep, or a certify report folder"
    )
    make.add_argument(
        "--world-size",
        type=int,
        metavar="N",
        help="the sweep's world size (default: the cell's, for a report folder)",
    )
    make.add_argument(
        "--record",
        metavar="FILE",
        help="the record to update or create (default: the kit's shipped record for the "
        "installed torch, harness/conformance/xfails/torch-X.Y.toml)",
    )
    show = add_command(
        verbs, "show", show_cmd, parents, help="which reference a cell's certification would use"
    )
    show.add_argument("cell", help="cell name")


def _lent(minor: tuple[int, int], database: set[str]) -> tuple[dict, dict]:
    """A new record's [skip] and [slow]: the nearest shipped record's, for the ops this
    torch has (they are about the ops: an op with no values to compare has none on any
    torch), so the new torch's sweeps skip the same ops from their first run on."""
    from harness.conformance import _ops
    from harness.report import reference

    lender = _ops.expectations_file(minor, reference.SHIPPED)
    lent = _ops.load_expectations(lender, database, torch=minor)  # another's: filtered
    return lent.skip, lent.slow


def make_cmd(args) -> int:
    from harness import compat, references
    from harness.report import junit, reference

    folder = Path(args.junit)
    source = f"{folder.name}/junit.xml" if folder.is_dir() else folder.name
    if folder.is_dir():  # a certify report folder: its junit.xml, its cell's world size
        args.junit = str(folder / "junit.xml")
        report = folder / "report.json"
        if args.world_size is None and report.is_file():
            import json

            args.world_size = json.loads(report.read_text(encoding="utf-8"))["cell"]["world_size"]
    if args.world_size is None:
        raise UsageError("--world-size N: give the world size the sweep ran at.")
    if args.world_size < 1:
        raise UsageError(f"--world-size {args.world_size}: a world size is a whole number >= 1.")
    if not Path(args.junit).is_file():
        raise UsageError(f"{args.junit}: no such JUnit file; pass the sweep's junit.xml.")
    database = {
        f"{o.name}:{o.variant_test_name}" if o.variant_test_name else o.name
        for o in compat.op_database()
    }
    results = _ops_of(junit.parse(args.junit), database)
    if not results:
        raise UsageError(f"{args.junit}: no test of the ops capability in it (no `op` property).")
    marked = [r.op for r in results if r.reason.startswith("expected failure")]
    if marked:
        raise UsageError(
            f"{args.junit}: {len(marked)} ops were marked known failures ({marked[0]}, ...), so "
            f"their errors are not in it; sweep with HARNESS_OPS_VERDICTS=raw (certify does)."
        )
    minor = compat.torch_version()
    path = (
        Path(args.record)
        if args.record
        else reference.SHIPPED / f"torch-{minor[0]}.{minor[1]}.toml"
    )
    old = reference.load(path) if path.is_file() else None
    ran = {r.op for r in results}
    full = database <= ran
    stamp = _dt.date.today().isoformat()
    made = f"harness reference make {source} --world-size {args.world_size} " + (
        f"({len(ran)} ops, torch {references.torch_build()}, {stamp})"
    )
    world = reference.world_from_results(results, made, full=full)
    before = old.at(args.world_size) if old else None
    kept = {op: before.own[op] for op in world.own if before and op in before.own}
    world = reference.World({**world.own, **kept}, world.checked, made)
    worlds = {**(old.worlds if old else {}), args.world_size: world}
    header = (
        f"DTensor's own failures on torch {minor[0]}.{minor[1]}'s OpInfo samples, per world size:\n"
        "the reference a certification judges a cell against (a cell fails an op only where\n"
        "the reference passes it; docs/certification.md). Made by `harness reference make`\n"
        "from full sweeps on CPU (under LocalTensor where torch has it, else on the\n"
        "cell's rank processes), reasons reviewed by hand."
    )
    skip, slow = (old.skip, old.slow) if old else _lent(minor, database)
    text = reference.dumps(
        old.torch if old else f"{minor[0]}.{minor[1]}", worlds, skip, slow, header
    )
    reference.parse(text.encode("utf-8"), str(path))  # what it writes, it reads back
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    new = sorted(set(world.own) - set(kept))
    gone = sorted(set(before.own) - set(world.own)) if before else []
    print(
        f"harness: {path} [world.{args.world_size}]: {len(world.own)} DTensor's own failures of "
        f"{len(ran)} ops ({'every op' if full else 'a partial sweep'}); {len(kept)} reasons kept, "
        f"{len(new)} new, {len(gone)} gone (they pass now)"
    )
    for op in new:
        print(f"  new: {op}: {world.own[op]}")
    if new:
        print("  review the new reasons before shipping the record.")
    return 0


def _ops_of(results, database: set[str]) -> list:
    """The ops capability's results, each with its op: the JUnit ``op`` property, else
    the op its test is named after (a plain pytest run writes no properties)."""
    import dataclasses
    import re

    by_test = {"test_" + re.sub(r"\W", "_", key): key for key in database}
    found = []
    for result in results:
        name = result.id.rpartition("::")[2].rpartition(".")[2].split("[", 1)[0]
        op = result.op or (by_test.get(name, "") if "test_ops" in result.id else "")
        if op:
            found.append(dataclasses.replace(result, op=op))
    return found


def show_cmd(args) -> int:
    from harness import references
    from harness.matrix import load_matrix

    cell = load_matrix(args.matrix).cell(args.cell)
    use = references.plan(cell)
    print(f"{cell.name}: torch {references.torch_build()}, world size {cell.world_size}")
    if use.record is not None:
        print(f"  reference: {use.describe()}")
        print(f"  sha256 {use.record.sha256}")
    elif use.reference_kind:
        print(
            "  no record: its certification becomes the record (CPU, no plugins), cached in "
            f"{references.cache_file(references.torch_build(), cell.world_size)}"
        )
    else:
        print(
            "  no record: its certification computes the reference for the ops it fails "
            "(CPU under LocalTensor, no plugins) and caches it in "
            f"{references.cache_file(references.torch_build(), cell.world_size)}"
        )
    return 0
