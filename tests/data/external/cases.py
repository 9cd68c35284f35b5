"""A suite for external mode: run by tests/test_external_torchrun.py under torchrun.

Some tests misbehave on one rank only, on purpose. ``test_y_killed`` kills the
rank named by HARNESS_TEST_KILL_RANK, ``test_hangs_on_one_rank`` hangs the one
named by HARNESS_TEST_HANG_RANK (when set); after either, no later test may run:
the job stops when it loses a rank.
"""

import os
import signal
import time

import torch
import torch.distributed as dist
from torch.distributed.tensor import Shard, distribute_tensor

from harness import DTensorTestBase, timeout_after, with_comms


def test_plain_fails_on_rank_1():
    """Outside the bases: no agreement, so only rank 1's report fails; the merge shows it."""
    assert os.environ["RANK"] != "1", "planted plain failure on rank 1"


class ExternalCases(DTensorTestBase):
    @with_comms
    def test_collective(self):
        t = torch.tensor([float(self.rank)])
        dist.all_reduce(t)
        self.assertEqual(t.item(), sum(range(self.world_size)))
        self.assertEqual(int(os.environ["RANK"]), self.rank)

    @with_comms
    def test_dtensor(self):
        mesh = self.build_device_mesh()
        full = torch.arange(4 * self.world_size, dtype=torch.float32).reshape(-1, 2)
        dt = distribute_tensor(full, mesh, [Shard(0)])
        self.assertEqual(dt.to_local().shape[0], full.shape[0] // self.world_size)
        self.assertEqual(dt.full_tensor(), full)

    @with_comms
    def test_fails_on_one_rank(self):
        # rank 1 fails before the collective its peers are waiting in
        self.assertNotEqual(self.rank, 1, "planted failure on rank 1")
        dist.all_reduce(torch.ones(1))

    @with_comms
    def test_skips_on_one_rank(self):
        if self.rank == 2:
            self.skipTest("planted skip on rank 2")
        dist.barrier()

    @timeout_after(3)
    @with_comms
    def test_hangs_on_one_rank(self):
        if self.rank == int(os.environ.get("HARNESS_TEST_HANG_RANK", "-1")):
            time.sleep(600)
        dist.barrier()

    @with_comms
    def test_then_recovers(self):
        t = torch.ones(2)
        dist.all_reduce(t)
        self.assertEqual(t, torch.full((2,), float(self.world_size)))

    @with_comms
    def test_y_killed(self):
        if self.rank == int(os.environ.get("HARNESS_TEST_KILL_RANK", "-1")):
            os.kill(os.getpid(), signal.SIGKILL)
        dist.all_reduce(torch.ones(1))

    @with_comms
    def test_z_not_reached(self):
        dist.barrier()
