"""Fake mode: a few ranks of a world of thousands, each its own process, values refused.

The test classes here run on the kit's bases exactly as in other cells; the fake
cell is set through the same environment ``harness run`` sets (HARNESS_MODE,
HARNESS_MESH, HARNESS_FAKE_RANKS).
"""

from __future__ import annotations

import os
import unittest
from pathlib import Path

import pytest
import torch
from torch.distributed.tensor import DTensor, Replicate, Shard

import harness.ranks.fake
from harness import DTensorContinuousTestBase, DTensorTestBase, shapes_only, with_comms
from harness.cli import main
from harness.matrix import load_matrix

WORLD = 8192
MESH = (8, 16, 64)
OUT_ENV = "HARNESS_TEST_FAKE_OUT"


class FakeWorld(DTensorTestBase):
    """Run by the tests below in a fake cell, not collected on its own."""

    __test__ = False

    @property
    def world_size(self) -> int:
        return WORLD

    @shapes_only
    @with_comms
    def test_rank_mesh_and_shards(self):
        mesh = self.build_device_mesh()
        coord = mesh.get_coordinate()
        block = torch.zeros(2, 3)
        dt = DTensor.from_local(block, mesh, [Shard(0), Replicate(), Shard(1)], run_check=False)
        self.assertEqual(tuple(dt.shape), (2 * MESH[0], 3 * MESH[2]))
        with self.assertCollectives({"all_gather": 1}, mesh=mesh, mesh_dim=2, bytes_per_rank=24):
            out = dt.redistribute(mesh, [Shard(0), Replicate(), Replicate()])
        self.assertEqual(tuple(out.to_local().shape), (2, 3 * MESH[2]))
        line = f"{self.rank} {os.getpid()} {tuple(mesh.shape)} {tuple(coord)}\n"
        with open(os.environ[OUT_ENV], "a") as f:
            f.write(line)

    @with_comms
    def test_needs_values(self):
        pytest.fail("a test that compares values must not run in a fake cell")

    @shapes_only
    @with_comms
    def test_compares_values(self):
        dt = DTensor.from_local(torch.ones(2), self.build_device_mesh(), [Shard(0)])
        self.assertEqual(dt.full_tensor(), torch.ones(2 * WORLD))

    @shapes_only
    @with_comms
    def test_wrong_collectives(self):
        mesh = self.build_device_mesh()
        dt = DTensor.from_local(torch.zeros(4), mesh, [Shard(0), Replicate(), Replicate()])
        with self.assertCollectives({"all_reduce": 1}, mesh=mesh, mesh_dim=0):
            dt.redistribute(mesh, [Replicate(), Replicate(), Replicate()])

    @shapes_only
    @with_comms
    def test_wrong_bytes(self):
        mesh = self.build_device_mesh()
        dt = DTensor.from_local(torch.zeros(4), mesh, [Replicate(), Replicate(), Shard(0)])
        with self.assertCollectives({("all_gather", 2): (1, 17)}, mesh=mesh):
            dt.redistribute(mesh, [Replicate(), Replicate(), Replicate()])


@shapes_only
class FakePool(DTensorContinuousTestBase):
    """A pool-mode class (the conformance suite's base) runs fake too; marked whole."""

    __test__ = False

    @with_comms
    def test_rank_is_an_int_of_the_world(self):
        self.assertIsInstance(self.rank, int)
        self.assertEqual(self.world_size, 1024)
        self.assertEqual(self.build_device_mesh().shape, (1024,))


def run(cls: type, method: str) -> unittest.TestResult:
    result = unittest.TestResult()
    cls(method).run(result)
    return result


@pytest.fixture
def fake_cell(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_MODE", "fake")
    monkeypatch.setenv("HARNESS_MESH", ",".join(map(str, MESH)))
    monkeypatch.setenv("HARNESS_FAKE_RANKS", "0,4095,8191")
    monkeypatch.setenv(OUT_ENV, str(tmp_path / "ranks.txt"))
    return tmp_path / "ranks.txt"


def test_chosen_ranks_each_run_in_their_own_process(fake_cell):
    result = run(FakeWorld, "test_rank_mesh_and_shards")
    assert result.wasSuccessful(), result.failures + result.errors
    lines = sorted(fake_cell.read_text().splitlines(), key=lambda line: int(line.split()[0]))
    ranks = [int(line.split()[0]) for line in lines]
    pids = {line.split()[1] for line in lines}
    assert ranks == [0, 4095, 8191]
    assert len(pids) == 3 and str(os.getpid()) not in pids
    # rank r of an 8 x 16 x 64 mesh sits at (r // 1024, r // 64 % 16, r % 64)
    assert [line.split(" ", 2)[2] for line in lines] == [
        "(8, 16, 64) (0, 0, 0)",
        "(8, 16, 64) (3, 15, 63)",
        "(8, 16, 64) (7, 15, 63)",
    ]


def test_default_ranks_are_first_middle_last(monkeypatch):
    monkeypatch.delenv("HARNESS_FAKE_RANKS", raising=False)
    from harness import devices

    assert devices.fake_ranks(8192) == (0, 4095, 8191)
    assert devices.fake_ranks(1) == (0,)
    monkeypatch.setenv("HARNESS_FAKE_RANKS", "5,9999")
    assert devices.fake_ranks(8192) == (5,)


def test_a_pool_class_runs_as_fake_ranks(monkeypatch):
    monkeypatch.setenv("HARNESS_MODE", "fake")
    monkeypatch.setenv("HARNESS_WORLD_SIZE", "1024")
    monkeypatch.delenv("HARNESS_FAKE_RANKS", raising=False)
    monkeypatch.setattr("harness.devices.NUM_DEVICES", 1024)
    monkeypatch.setattr("harness.bases.NUM_DEVICES", 1024)
    result = run(FakePool, "test_rank_is_an_int_of_the_world")
    assert result.wasSuccessful(), result.failures + result.errors


def test_a_test_that_needs_values_is_skipped_before_any_rank(fake_cell, monkeypatch):
    monkeypatch.setattr(
        harness.ranks.fake.RankGroup, "for_job", lambda *a, **k: pytest.fail("spawned")
    )
    result = run(FakeWorld, "test_needs_values")
    assert len(result.skipped) == 1, result.failures + result.errors
    reason = result.skipped[0][1]
    assert "compares values" in reason and "@harness.shapes_only" in reason


def test_a_shapes_only_test_that_compares_values_fails_saying_why(fake_cell):
    result = run(FakeWorld, "test_compares_values")
    assert len(result.failures) == 1
    text = result.failures[0][1]
    assert "ValuesNotComputed" in text and "does not compute" in text
    assert "fake ranks 0, 4095, 8191 of 8192; rank 8191 not run" in text


def test_wrong_collectives_fail_with_what_was_issued(fake_cell):
    result = run(FakeWorld, "test_wrong_collectives")
    text = (result.failures + result.errors)[0][1]
    assert "collectives differ" in text
    assert "all_gather on mesh dim 0: 1 call(s), 16 bytes from this rank" in text


def test_bytes_per_kind_and_dim_are_checked(fake_cell):
    result = run(FakeWorld, "test_wrong_bytes")
    text = (result.failures + result.errors)[0][1]
    assert "expected 17 bytes for ('all_gather', 2), got 16" in text


# -- the matrix and the command line ----------------------------------------------------
MATRIX = """
schema = 1
[accelerators.cpu]
device = "cpu"
backend = "gloo"
cells = {{ native = [2], fake = [1024, 8192] }}
[overrides."{cell}"]
{key} = {value}
"""


def write(tmp_path: Path, cell: str, key: str, value: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(MATRIX.format(cell=cell, key=key, value=value))
    return path


def test_fake_cells_carry_mesh_and_ranks(tmp_path):
    matrix = load_matrix(write(tmp_path, "cpu-8192fake", "mesh", "[8, 16, 64]"))
    cell = matrix.cell("cpu-8192fake")
    assert (cell.mode, cell.unit, cell.devices_needed) == ("fake", "fake", 0)
    env = cell.harness_env()
    assert env["HARNESS_MODE"] == "fake" and env["HARNESS_MESH"] == "8,16,64"
    assert matrix.cell("cpu-1024fake").harness_env()["HARNESS_MESH"] == "1024"  # 1-D


@pytest.mark.parametrize(
    ("cell", "key", "value", "says"),
    [
        ("cpu-8192fake", "mesh", "[8, 16, 32]", "overrides.cpu-8192fake.mesh = [8, 16, 32]"),
        ("cpu-1024fake", "ranks", "[0, 1024]", "overrides.cpu-1024fake.ranks: rank 1024"),
        ("cpu-2rank", "mesh", "[2]", "mesh and ranks are for fake cells"),
        ("cpu-1024fake", "mesh", "[0, 4]", "mesh[0]: mesh dimension 0 is out of bounds"),
    ],
)
def test_a_bad_fake_cell_is_one_line_and_exit_2(tmp_path, capsys, cell, key, value, says):
    assert main(["matrix", "validate", str(write(tmp_path, cell, key, value))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err


def test_a_torch_without_the_fake_group_stops_the_run(tmp_path, capsys, monkeypatch):
    from harness import compat

    monkeypatch.setattr(compat, "fake_group_missing", lambda: "fake mode needs torch >= 2.2")
    monkeypatch.setattr("harness.pipeline.execute", lambda *a, **k: pytest.fail("ran pytest"))
    path = write(tmp_path, "cpu-8192fake", "mesh", "[8, 16, 64]")
    assert main(["run", "cpu-8192fake", "--matrix", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1] == "harness: error: cell cpu-8192fake cannot run: fake mode needs torch >= 2.2."
    ), err


@pytest.mark.parametrize("cell", ["cpu-4rank", "cpu-8sim", "cpu-1024fake"])
def test_the_same_collective_assertions_hold_native_simulated_and_fake(cell):
    """harness/conformance/test_communication.py: 4 rank processes on gloo, LocalTensor's
    8 simulated ranks, 3 of 1,024 fake ranks; every test runs and passes in each."""
    import subprocess
    import sys

    from harness import compat

    if cell.endswith("sim") and compat.local_tensor_missing():
        pytest.skip(compat.local_tensor_missing())
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "harness/conformance/test_communication.py", "--harness-cell", cell,
         "--harness-matrix", str(root / "matrix.toml")],
        cwd=root, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert "4 passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-1000:]
