"""Many cells' reports -> one matrix report: a vendor's whole matrix on one page.

Every input is verified first; a tampered cell is refused rather than merged,
since the matrix report would otherwise launder it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness._version import __version__
from harness.errors import UsageError
from harness.report import bundle, schema, views


def find_reports(paths: Iterable[str | Path]) -> list[Path]:
    """Report folders: each path is one, or holds them one level down (results/)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise UsageError(f"{str(path)!r} is not a folder; pass report folders or results/.")
        if (path / bundle.REPORT).is_file():
            found.append(path)
            continue
        below = sorted(  # a matrix report beside the cells (an earlier merge) is not a cell
            p.parent
            for p in path.glob(f"*/{bundle.REPORT}")
            if bundle.load(p.parent).get("kind") == "cell"
        )
        if not below:
            raise UsageError(
                f"{path} holds no {bundle.REPORT}, nor do its subfolders; "
                f"run `harness certify CELL` first."
            )
        found.extend(below)
    return list(dict.fromkeys(found))


def merge(folders: list[Path]) -> tuple[dict[str, Any], list[str]]:
    """The sealed matrix report and the problems that stopped it (if any)."""
    rows, problems = [], []
    for folder in folders:
        report = bundle.load(folder)
        if report.get("kind") != "cell":
            raise UsageError(f"{folder} holds a matrix report; merge the cells' folders instead.")
        found = bundle.verify(folder)
        problems += [f"{folder}: {p}" for p in found.problems]
        rows.append(views.cell_row(report, source=str(folder)))
    verdicts = [row["verdict"] for row in rows]
    if schema.FAIL in verdicts:
        overall = schema.FAIL
    elif schema.INCOMPLETE in verdicts:
        overall = schema.INCOMPLETE
    else:
        overall = schema.PASS if schema.PASS in verdicts else schema.SKIP
    report = {
        "schema": {"name": schema.SCHEMA, "version": schema.SCHEMA_VERSION},
        "kind": "matrix",
        "harness_version": __version__,
        "created": schema.now(),
        "verdict": overall,
        "cells": rows,
    }
    return schema.seal(report), problems
