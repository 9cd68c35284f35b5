"""The conformance suite certifies CPU cells at world sizes 1, 2, 4 and 8 simulated.

Each cell is one ``harness certify`` run of the shipped suite, as a vendor runs
it; the four reports then merge into one matrix report.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import compat, hosts
from harness.cli import main
from harness.report import bundle
from harness.report.capabilities import CAPABILITIES, OPS_UNSUPPORTED
from harness.skips import world_shortfall

ROOT = Path(__file__).resolve().parent.parent
CELLS = ("cpu-1rank", "cpu-2rank", "cpu-4rank", "cpu-8sim")
# The ops capability on a few ops (one passes, one is not supported by DTensor): the
# whole database is tests/test_ops_coverage.py's and docs/certification.md's business.
OPS = "add,cdist"
# What an older torch lacks (docs/torch-versions.md), asked of this torch and gloo:
# a -sim cell skips as a whole without LocalTensor (< 2.10); gloo has no AVG before 2.8.
NO_LOCAL_TENSOR = compat.local_tensor_missing()
GLOO_HAS_AVG = hosts.reduce_op_supported("gloo", "AVG")


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("certified")


_RUNS: dict[str, tuple] = {}


def _certify(cell: str, reports: Path):
    """One certify run per cell and session, shared by the tests that read it."""
    if cell not in _RUNS:
        out = reports / cell
        done = subprocess.run(
            [sys.executable, "-m", "harness", "certify", cell, "--matrix",
             str(ROOT / "matrix.toml"), "--out", str(out)],
            capture_output=True, text=True, timeout=600, cwd=reports,
            env={**os.environ, "CI": "true", "HARNESS_OPS": OPS}, check=False,
        )  # fmt: skip
        _RUNS[cell] = (cell, done, out)
    return _RUNS[cell]


@pytest.fixture(params=CELLS)
def certified(request, reports):
    return _certify(request.param, reports)


def _skips(report: dict) -> dict[str, str]:
    return {
        t["id"].rsplit("::", 1)[-1]: t["reason"]
        for c in report["capabilities"]
        for t in c["tests"]
        if t["outcome"] == "skipped"
    }


@pytest.mark.slow  # full certifications, one per cell (nox -s slow)
def test_cell_is_certified_with_every_capability(certified):
    cell, done, out = certified
    whole_cell_skipped = bool(cell.endswith("sim") and NO_LOCAL_TENSOR)
    # a cell that certified nothing (torch < 2.10, -sim) is not a pass: exit 1, verdict skip
    assert done.returncode == int(whole_cell_skipped), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == ("skip" if whole_cell_skipped else "pass")
    assert [c["name"] for c in report["capabilities"]] == list(CAPABILITIES)
    assert all(c["verdict"] in ("pass", "skip") for c in report["capabilities"])
    assert report["cell"]["name"] == cell
    assert bundle.verify(out).ok
    for name in CAPABILITIES:  # progress reported each capability with its counts
        assert any(line.split()[:1] == [name] for line in done.stdout.splitlines()), name


@pytest.mark.slow
def test_skips_name_what_the_cell_lacks(certified):
    cell, _, out = certified
    report = json.loads((out / "report.json").read_text())
    skips = _skips(report)
    by_cap = {c["name"]: c for c in report["capabilities"]}
    assert all(reason for reason in skips.values()), skips
    if cell.endswith("sim") and NO_LOCAL_TENSOR:  # one reason for all, naming torch 2.10
        assert set(skips.values()) == {f"cell {cell}: {NO_LOCAL_TENSOR}"}, skips
        assert report["summary"]["skipped"] == report["summary"]["total"]
        return
    # an older torch's gaps: strict, linked xfails (_torch_gaps), skips naming the torch
    # a feature needs, and gloo's missing ReduceOp.AVG before 2.8
    older = {
        t for t, why in skips.items() if why.startswith("expected failure: known gap of torch <")
    }
    older |= {t for t, why in skips.items() if "needs torch >= " in why}
    if GLOO_HAS_AVG is False:
        assert "offers no ReduceOp.AVG" in skips.pop("test_all_reduce_avg")
    if cell == "cpu-1rank":
        assert skips["test_send_recv_ring"] == "needs at least 2 ranks; the cell has 1"
        assert skips["test_2d_mesh_and_submeshes"] == "needs at least 4 ranks; the cell has 1"
        assert by_cap["collectives"]["passed"] >= 10  # collectives still run on one rank
    if cell == "cpu-8sim":
        assert report["cell"]["mode"] == "local"
        assert by_cap["checkpoint"]["verdict"] == "skip"
        assert skips["test_save_and_load_with_resharding"].startswith(
            "not simulated in LocalTensor mode"
        )
        assert by_cap["parallel"]["passed"] == 4  # TP, SP, EP and EP+TP at 8 ranks
    if cell in ("cpu-2rank", "cpu-4rank"):
        assert by_cap["collectives"]["skipped"] == (1 if GLOO_HAS_AVG is False else 0)
        if importlib.util.find_spec("numpy") is not None:
            assert by_cap["checkpoint"]["passed"] == (2 if cell == "cpu-4rank" else 1)
        else:  # torch's object collectives, which checkpointing uses, need numpy
            assert "pip install numpy" in skips["test_save_and_load_with_resharding"]
    if cell == "cpu-4rank":
        checkpoint = {"test_save_and_load_with_resharding", "test_load_across_meshes"}
        rng = {"test_dropout_masks_differ_between_shards", "test_same_seed_same_random_dtensor"}
        # an op DTensor has no sharding strategy for is coverage, recorded as a skip
        unsupported = {t for t, why in skips.items() if why.startswith(OPS_UNSUPPORTED)}
        assert unsupported == {"test_cdist"}, skips
        assert set(skips) - checkpoint - unsupported - older <= rng


@pytest.mark.slow
def test_cells_merge_into_one_matrix_report(reports):
    for cell in CELLS:
        _certify(cell, reports)
    out = reports / "matrix"
    assert main(["report", "merge", str(reports), "--out", str(out)]) == 0
    merged = bundle.load(out)
    assert [row["cell"] for row in merged["cells"]] == sorted(CELLS)
    assert merged["verdict"] == "pass"


@pytest.mark.parametrize(
    ("need", "world", "simulated", "reason"),
    [
        ({"ranks": 2, "even": False, "divides": None, "local": True}, 1, False,
         "needs at least 2 ranks; the cell has 1"),
        ({"ranks": 1, "even": True, "divides": None, "local": True}, 3, False,
         "needs an even world size; the cell has 3"),
        ({"ranks": 1, "even": False, "divides": 8, "local": True}, 3, False,
         "needs a world size that divides 8; the cell has 3"),
        ({"ranks": 1, "even": False, "divides": 8, "local": "why"}, 8, True,
         "not simulated in LocalTensor mode: why"),
        ({"ranks": 4, "even": True, "divides": 8, "local": True}, 8, True, None),
    ],
)  # fmt: skip
def test_world_size_needs(need, world, simulated, reason):
    assert world_shortfall(need, world, simulated) == reason
