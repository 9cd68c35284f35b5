"""Certify many cells on many torches, one at a time, and tabulate the reports.

    python bench/certifications.py run --python PY --out DIR CELL [CELL ...]
    python bench/certifications.py table DIR [DIR ...]

``run`` calls ``PY -m harness certify CELL --out DIR/<torch>/<cell>`` for each cell in
turn (PY: the interpreter of a venv holding another torch), and notes each one's host
load before and after in ``DIR/runs.jsonl``. ``table`` reads every ``report.json``
under the folders and prints the markdown table docs/certification.md holds: verdict,
passed, DTensor's own, failed, skipped and wall per (torch, cell), with the load each
ran under and where its reference came from. Nothing is judged here: the figures are
the reports' own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _torch(python: str) -> str:
    code = "from importlib.metadata import version; print(version('torch'))"
    return subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def run(python: str, out: Path, cells: list[str], matrix: str | None) -> int:
    torch = _torch(python).split("+")[0]
    worst = 0
    for cell in cells:
        folder = out / torch / cell
        argv = [python, "-m", "harness", "certify", cell, "--out", str(folder)]
        argv += ["--matrix", matrix] if matrix else []
        before, start = _load(), time.monotonic()
        with open(out / f"{torch}-{cell}.log", "wb") as log:
            code = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT)
        row = {"torch": torch, "cell": cell, "exit": code, "wall_s": time.monotonic() - start}
        row.update(load_before=before, load_after=_load())
        with open(out / "runs.jsonl", "a", encoding="utf-8") as runs:
            runs.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        worst = max(worst, code)
    return worst


def _runs(folders: list[Path]) -> dict[Path, dict]:
    """A report folder -> its run's row in runs.jsonl (its load), where ``run`` wrote one."""
    found = {}
    for runs in (f / "runs.jsonl" for f in folders):
        lines = runs.read_text(encoding="utf-8").splitlines() if runs.is_file() else []
        for row in map(json.loads, lines):
            found[(runs.parent / row["torch"] / row["cell"]).resolve()] = row
    return found


def _order(path: Path) -> tuple:
    """Reports by torch version (numerically), then world size, then cell name."""
    report = json.loads(path.read_text(encoding="utf-8"))
    torch = report["fingerprint"]["packages"]["torch"].split("+")[0]
    version = tuple(int(p) for p in torch.split(".") if p.isdigit())
    return version, report["cell"]["world_size"], report["cell"]["name"], str(path)


def table(folders: list[Path]) -> str:
    runs = _runs(folders)
    lines = [
        "| torch | cell | verdict | passed | DTensor's own | failed | skipped | wall s "
        "| load before/after | reference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    reports = sorted((p for f in folders for p in f.rglob("report.json")), key=_order)
    for path in reports:
        report = json.loads(path.read_text(encoding="utf-8"))
        torch = report["fingerprint"]["packages"]["torch"].split("+")[0]
        cell, summary = report["cell"]["name"], report["summary"]
        failed = summary["failed"] + summary["error"]
        load = runs.get(path.parent.resolve())
        loads = f"{load['load_before']:.1f}/{load['load_after']:.1f}" if load else "-"
        source = (report.get("reference") or {}).get("source", "-")
        lines.append(
            f"| {torch} | {cell} | {report['verdict'].upper()} | {summary['passed']} "
            f"| {summary['own']} | {failed} | {summary['skipped']} "
            f"| {report['run']['wall_s']:.0f} | {loads} | {source} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    doing = sub.add_parser("run", help="certify cells one at a time")
    doing.add_argument("--python", default=sys.executable)
    doing.add_argument("--out", type=Path, required=True)
    doing.add_argument("--matrix")
    doing.add_argument("cells", nargs="+")
    showing = sub.add_parser("table", help="the markdown table of the reports under DIRs")
    showing.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        args.out.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        return run(args.python, args.out, args.cells, args.matrix)
    print(table(args.folders))
    return 0


if __name__ == "__main__":
    sys.exit(main())
