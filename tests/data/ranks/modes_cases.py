"""Test classes for tests/test_bases_modes.py (a module, so pytest does not collect them)."""

import os
import time

import torch
import torch.distributed as dist

from harness import DTensorContinuousTestBase, DTensorOpTestBase, DTensorTestBase, with_comms


class WithComms(DTensorTestBase):
    @property
    def world_size(self):
        return 2

    @with_comms
    def test_bare(self):
        assert dist.get_world_size() == 2 and dist.get_rank() == self.rank

    @with_comms(eager_init=True)
    def test_eager_init(self):
        assert dist.is_initialized()

    @with_comms(backend="gloo")
    def test_backend(self):
        assert dist.get_backend() == "gloo"

    @with_comms
    def test_prints(self):
        print(f"hello from rank {self.rank}")

    @with_comms
    def test_subtests(self):
        self.run_subtests({"n": [1, 2]}, self._check, rank=self.rank)

    def _check(self, n, rank):
        t = torch.ones(1) * n
        dist.all_reduce(t)
        self.assertEqual(t.item(), 2 * n)
        if n == 2 and rank == 1:
            raise AssertionError("subtest n=2 fails on rank 1")

    def test_setup_ran_in_rank(self):
        assert self.from_setup == "set in setUp"

    def setUp(self):
        super().setUp()
        self.from_setup = "set in setUp"


class Pool(DTensorContinuousTestBase):
    world_size = 2

    def test_pg_is_ready(self):
        assert dist.get_world_size() == 2
        assert os.environ["RANK"] == str(self.rank)


class Ops(DTensorOpTestBase):
    @property
    def world_size(self):
        return 2

    def test_mesh(self):
        assert self.build_device_mesh().size() == 2


class Sleeper(DTensorContinuousTestBase):
    world_size = 2

    def test_sleep(self):
        folder = os.environ.get("SCENARIO_PIDS")
        if folder:
            open(os.path.join(folder, f"{os.getpid()}.pid"), "w").close()
        time.sleep(120)
