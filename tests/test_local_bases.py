"""LocalTensor bases and the mode override, against process mode.

One set of test classes runs natively (4 rank processes) and simulated (one
process); the outcomes must agree. World sizes 8 and 16 run simulated only.
The known LocalTensor gaps each get a test showing whether the kit handles
them or skips with the reason.
"""

from __future__ import annotations

import inspect
import os
import unittest

import pytest
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

from harness import compat

if compat.local_tensor_missing():  # torch < 2.10: the whole module runs LocalTensor mode
    pytest.skip(compat.local_tensor_missing(), allow_module_level=True)

from harness import (
    DTensorContinuousTestBase,
    DTensorOpTestBase,
    DTensorTestBase,
    LocalDTensorContinuousTestBase,
    LocalDTensorOpTestBase,
    LocalDTensorTestBase,
    create_local_tensor_test_class,
    with_comms,
)

PIDS: list[int] = []


class Shared:
    """Tests that mean the same on real and simulated ranks."""

    __test__ = False  # run by the tests below, not collected on their own
    size = 4

    @property
    def world_size(self) -> int:
        return type(self).size

    @with_comms
    def test_shard_follows_rank(self):
        full = torch.arange(self.world_size * 6, dtype=torch.float32).reshape(-1, 3)
        dt = distribute_tensor(full, self.build_device_mesh(), [Shard(0)])
        self.assertEqual(dt.to_local(), full.narrow(0, self.rank * 2, 2))
        self.assertEqual(dt.redistribute(placements=[Replicate()]).to_local(), full)

    @with_comms
    def test_dist_get_rank_is_per_rank(self):
        """Handled gap: dist.get_rank() under the fake group."""
        t = torch.ones(2) * dist.get_rank()
        self.assertEqual(t, torch.ones(2) * self.rank)
        self.assertEqualOnRank(t, torch.full((2,), 2.0), rank=2)
        dist.all_reduce(t)
        total = self.world_size * (self.world_size - 1) / 2
        self.assertEqual(t, torch.full((2,), total))

    @with_comms
    def test_seeded_factory_ops(self):
        """Handled gap: per-rank RNG state of factory ops after a per-rank seed."""
        self.init_manual_seed_for_rank()
        mine = torch.randn(1, 3)
        rows = DTensor.from_local(mine, self.build_device_mesh(), [Shard(0)]).full_tensor()
        for r in range(self.world_size):
            torch.manual_seed(r)
            self.assertEqual(rows[r], torch.randn(3))

    @with_comms
    def test_wrong_answer_fails(self):
        dt = distribute_tensor(torch.ones(4, 4), self.build_device_mesh(), [Shard(0)])
        self.assertEqual(dt.full_tensor(), torch.zeros(4, 4))

    def test_skip_is_a_skip(self):
        PIDS.append(os.getpid())
        self.skipTest("skipped on purpose")


class NativeCase(Shared, DTensorTestBase):
    """Shared on 4 real rank processes (or simulated under HARNESS_MODE=local)."""

    __test__ = False


class NativePool(Shared, DTensorContinuousTestBase):
    __test__ = False


class NativeOps(Shared, DTensorOpTestBase):
    __test__ = False


LocalCase = create_local_tensor_test_class(NativeCase)

EXPECTED = {
    "test_shard_follows_rank": "passed",
    "test_dist_get_rank_is_per_rank": "passed",
    "test_seeded_factory_ops": "passed",
    "test_wrong_answer_fails": "failed",
    "test_skip_is_a_skip": "skipped",
}


def outcomes(cls: type, names=None) -> dict[str, str]:
    suite = unittest.TestSuite(cls(n) for n in (names or EXPECTED))
    result = unittest.TestResult()
    suite.run(result)
    status = dict.fromkeys(names or EXPECTED, "passed")
    for test, _ in result.failures + result.errors:
        status[test._testMethodName] = "failed"
    for test, _ in result.skipped:
        status[test._testMethodName] = "skipped"
    reasons = {t._testMethodName: r for t, r in result.skipped}
    outcomes.reasons = reasons  # type: ignore[attr-defined]
    outcomes.failures = [text for _, text in result.failures + result.errors]  # type: ignore[attr-defined]
    return status


@pytest.fixture(autouse=True)
def _native_cell(monkeypatch):
    for name in ("HARNESS_MODE", "HARNESS_WORLD_SIZE", "HARNESS_CELL"):
        monkeypatch.delenv(name, raising=False)
    PIDS.clear()


def test_local_variant_is_named_and_simulated():
    assert LocalCase.__name__ == "NativeCaseWithLocalTensor"
    assert issubclass(LocalCase, LocalDTensorTestBase)
    case = LocalCase("test_shard_follows_rank")
    assert (
        case.is_local_tensor_enabled
        and not NativeCase("test_skip_is_a_skip").is_local_tensor_enabled
    )


def test_process_and_local_modes_agree_at_world_size_4():
    native = outcomes(NativeCase)
    assert native == EXPECTED
    assert os.getpid() not in PIDS  # native bodies ran in rank processes
    PIDS.clear()
    assert outcomes(LocalCase) == native
    assert PIDS == [os.getpid()]  # the simulated body ran once, here


@pytest.mark.parametrize(
    "cls, size", [(NativeCase, 8), (NativeCase, 16), (NativePool, 8), (NativeOps, 8)]
)
def test_mode_override_runs_unchanged_classes(cls, size, monkeypatch):
    monkeypatch.setenv("HARNESS_MODE", "local")  # what a cpu-<N>sim cell sets
    monkeypatch.setattr(Shared, "size", size)
    assert outcomes(cls) == EXPECTED
    assert PIDS == [os.getpid()]
    assert not dist.is_initialized()


def test_skipped_tests_are_reported_with_the_reason():
    cls = create_local_tensor_test_class(NativeCase, skipped_tests=["test_shard_follows_rank"])
    assert outcomes(cls, ["test_shard_follows_rank"]) == {"test_shard_follows_rank": "skipped"}
    assert "skipped_tests" in outcomes.reasons["test_shard_follows_rank"]


#: A group with permuted ranks needs new_group(sort_ranks=False): 2.11 has no such
#: argument (its groups are always sorted), 2.13 has it.
SORT_RANKS = "sort_ranks" in inspect.signature(dist.new_group).parameters
NO_SORT_RANKS = "this torch's new_group always sorts its ranks (no sort_ranks argument)"


class Gaps(LocalDTensorTestBase):
    """Tests written for real processes that one process cannot simulate."""

    __test__ = False

    @property
    def world_size(self) -> int:
        return 4

    @with_comms
    def test_send_recv(self):
        t = torch.ones(2) * self.rank
        if self.rank == 0:
            dist.send(t, dst=1)
        else:
            dist.recv(t, src=0)

    @with_comms
    def test_permuted_group(self):
        if not SORT_RANKS:
            self.skipTest(NO_SORT_RANKS)
        group = dist.new_group([3, 1, 0, 2], sort_ranks=False)
        t = torch.ones(1)
        dist.all_reduce(t, group=group)
        self.assertEqual(t, torch.full((1,), 4.0))  # where torch simulates it (2.15)

    @with_comms
    def test_branch_on_rank(self):
        if self.rank < 2:
            dist.all_reduce(torch.ones(1))

    @with_comms
    def test_real_bug_still_fails(self):
        dt = distribute_tensor(torch.ones(4, 4), self.build_device_mesh(), [Shard(0)])
        dt @ distribute_tensor(torch.ones(5, 5), self.build_device_mesh(), [Shard(0)])


class OnRank(LocalDTensorTestBase):
    __test__ = False

    @property
    def world_size(self) -> int:
        return 4

    def test_wrong_value_on_rank_one(self):
        self.assertEqualOnRank(torch.ones(1) * self.rank, torch.zeros(1), rank=1)

    def test_other_ranks_differ(self):
        self.assertEqualOnRank(torch.ones(1) * self.rank, torch.zeros(1), rank=0)
        self.assertNotEqualOnRank(torch.ones(1) * self.rank, torch.zeros(1), rank=3)


class RankInts(LocalDTensorTestBase):
    __test__ = False

    @property
    def world_size(self) -> int:
        return 4

    def test_rank_arithmetic_matches_per_rank(self):
        self.assertEqual((3 * (self.rank // 2), self.rank), (3 * (self.rank // 2), self.rank))
        self.assertEqual([self.rank + 1], [1 + self.rank])

    def test_rank_against_a_plain_int_fails_on_the_other_ranks(self):
        self.assertEqual(self.rank, 0)


def test_per_rank_ints_compare_rank_by_rank():
    """`assertEqual(offsets, expected)` with rank-dependent ints: compared, not skipped."""
    assert outcomes(
        RankInts,
        [
            "test_rank_arithmetic_matches_per_rank",
            "test_rank_against_a_plain_int_fails_on_the_other_ranks",
        ],
    ) == {
        "test_rank_arithmetic_matches_per_rank": "passed",
        "test_rank_against_a_plain_int_fails_on_the_other_ranks": "failed",
    }


def test_checks_on_one_rank_are_not_silent_passes():
    """``self.rank == 1`` is False for all simulated ranks; the check must still run."""
    assert outcomes(OnRank, ["test_wrong_value_on_rank_one", "test_other_ranks_differ"]) == {
        "test_wrong_value_on_rank_one": "failed",
        "test_other_ranks_differ": "passed",
    }


class OwnMode(LocalDTensorTestBase):
    """A test that enters its own LocalTensorMode, as PyTorch's test_utils.py does."""

    __test__ = False

    @property
    def world_size(self) -> int:
        return 4

    @with_comms
    def test_own_mode_over_the_same_ranks(self):
        from torch.distributed._local_tensor import LocalTensor, LocalTensorMode
        from torch.distributed.device_mesh import DeviceMesh

        with LocalTensorMode(self.world_size) as own:
            for shard in torch.ones(2)._local_tensors.values():
                self.assertIs(type(shard), torch.Tensor)  # not a LocalTensor of the kit's
            with own.disable():  # rank-specific work, outside the test's mode
                self.assertIs(type(torch.ones(2)), torch.Tensor)
            mesh = DeviceMesh(self.device_type, torch.arange(4).view(2, 2))
            full = torch.arange(8.0).reshape(4, 2)
            dt = distribute_tensor(full, mesh, [Shard(0), Shard(1)])
            self.assertEqualOnRank(dt.to_local(), full[2:4, 1:2], rank=3)
            self.assertEqual(dt.full_tensor(), full)
        self.assertIsInstance(torch.ones(2), LocalTensor)  # the kit's mode is back


def test_a_tests_own_mode_replaces_the_kits_for_the_same_ranks():
    """Two nested modes made each rank's shard a LocalTensor, and cost N times the work."""
    assert outcomes(OwnMode, ["test_own_mode_over_the_same_ranks"]) == {
        "test_own_mode_over_the_same_ranks": "passed"
    }, outcomes.failures
    assert not dist.is_initialized()


#: LocalTensorMode runs collectives on permuted groups from torch 2.15 (2.14 unchecked).
PERMUTED_GROUPS = compat.torch_version() >= (2, 15)


@pytest.mark.skipif(compat.torch_version() == (2, 14), reason="torch 2.14 was not checked")
def test_gaps_are_skips_with_their_reason():
    names = [
        "test_send_recv",
        "test_permuted_group",
        "test_branch_on_rank",
        "test_real_bug_still_fails",
    ]
    status = outcomes(Gaps, names)
    reasons = outcomes.reasons
    assert status == {
        "test_send_recv": "skipped",
        "test_permuted_group": "passed" if PERMUTED_GROUPS else "skipped",
        "test_branch_on_rank": "skipped",
        "test_real_bug_still_fails": "failed",
    }
    assert (
        "send/recv" in reasons["test_send_recv"] and "LocalRunnerMode" in reasons["test_send_recv"]
    )
    if not PERMUTED_GROUPS:
        why = "permuted ranks [3, 1, 0, 2]" if SORT_RANKS else "always sorts its ranks"
        assert why in reasons["test_permuted_group"]
    assert "branches on it" in reasons["test_branch_on_rank"]
    assert not dist.is_initialized()


class OnOpBase(LocalDTensorOpTestBase):
    __test__ = False

    @property
    def world_size(self) -> int:
        return 8

    def test_mesh_without_with_comms(self):
        mesh = self.build_device_mesh()
        self.assertEqual(
            distribute_tensor(torch.ones(8), mesh, [Shard(0)]).to_local(), torch.ones(1)
        )


class OnPoolBase(LocalDTensorContinuousTestBase):
    __test__ = False

    @property
    def world_size(self) -> int:
        return 8

    def test_rank_and_mesh(self):
        t = torch.ones(1) * self.rank
        dist.all_reduce(t)
        self.assertEqual(t, torch.full((1,), 28.0))


@pytest.mark.parametrize("cls", [OnOpBase, OnPoolBase])
def test_thread_and_pool_bases_have_local_twins(cls):
    name = next(n for n in vars(cls) if n.startswith("test_"))
    assert outcomes(cls, [name]) == {name: "passed"}
    assert issubclass(cls, (DTensorOpTestBase, DTensorContinuousTestBase))


SUITE_FILE = """
import os
import torch
import torch.distributed as dist
from torch.distributed.tensor import Shard, distribute_tensor
from harness import DTensorTestBase, with_comms


class Plain(DTensorTestBase):
    @with_comms
    def test_sharded_sum(self):
        assert self.is_local_tensor_enabled and self.world_size == 8
        full = torch.arange(16.0)
        dt = distribute_tensor(full, self.build_device_mesh(), [Shard(0)])
        self.assertEqual(dt.full_tensor().sum(), full.sum())
        print("PID", os.getpid())

    @with_comms
    def test_send_recv(self):
        t = torch.ones(1)
        if self.rank == 0:
            dist.send(t, dst=1)
        else:
            dist.recv(t, src=0)
"""


def test_pytest_option_runs_a_native_file_simulated(tmp_path):
    import subprocess
    import sys

    (tmp_path / "test_suite.py").write_text(SUITE_FILE)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-s",
            str(tmp_path / "test_suite.py"),
            "--harness-mode=local",
            "--harness-world-size=8",
            "-p",
            "no:cacheprovider",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")},
    )
    out = proc.stdout + proc.stderr
    assert "1 passed, 1 skipped" in out, out
    assert "send/recv" in out
    assert out.count("PID") == 1  # one body, one process


def test_skipped_names_the_class_lacks_add_no_tests():
    variant = create_local_tensor_test_class(NativeCase, skipped_tests=["test_not_in_the_class"])
    assert not hasattr(variant, "test_not_in_the_class")
