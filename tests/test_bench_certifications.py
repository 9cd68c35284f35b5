"""bench/certifications.py: certify cells one at a time, then tabulate what the reports say
(a one-test suite stands in for the conformance suite)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from harness_cli import python  # tests/ is on sys.path

PROJECT = Path(__file__).resolve().parent.parent
BENCH = PROJECT / "bench" / "certifications.py"
SUITE = """import unittest

class FlipTest(unittest.TestCase):
    def test_flip(self):
        self.assertEqual([1, 2][::-1], [2, 1])

    def test_broken(self):
        self.assertEqual(1, 2)
"""


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return python(str(BENCH), *args, cwd=cwd, env={"CI": "true", "PYTHONPATH": str(PROJECT)})


def test_run_then_table_gives_each_cells_figures_and_load(tmp_path):
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "test_flip.py").write_text(SUITE)
    (tmp_path / "matrix.toml").write_text(
        'schema = 1\n[defaults]\nsuites = ["vendor/test_flip.py"]\n'
        '[accelerators.cpu]\ndevice = "cpu"\nbackend = "gloo"\ncells = { native = [1, 2] }\n'
    )
    out = tmp_path / "certs"
    ran = _bench(
        "run", "--out", str(out), "--matrix", str(tmp_path / "matrix.toml"),
        "cpu-1rank", "cpu-2rank", cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 1, ran.stdout + ran.stderr  # the failing test fails each cell
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [(r["cell"], r["exit"]) for r in rows] == [("cpu-1rank", 1), ("cpu-2rank", 1)]
    assert all(r["wall_s"] > 0 and r["load_before"] >= 0 for r in rows)

    shown = _bench("table", str(out), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if "| cpu-" in line]
    assert len(lines) == 2
    for line, cell in zip(lines, ("cpu-1rank", "cpu-2rank")):
        cols = [c.strip() for c in line.strip("|").split("|")]
        # torch, cell, verdict, passed, own, failed, skipped, wall, load, reference
        assert cols[1:7] == [cell, "FAIL", "1", "0", "1", "0"], line
        assert cols[8] != "-"  # the run's load was found and shown
