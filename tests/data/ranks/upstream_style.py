"""A small test file written against PyTorch's private DTensor test helpers.

tests/test_bases_upstream_compat.py runs it as is (PyTorch's harness) and with
only its imports changed to ``harness``, and compares every test's outcome.
"""

import unittest

import torch
import torch.distributed as dist
from torch.distributed.tensor import Replicate, Shard, distribute_tensor
from torch.testing._internal.common_distributed import skip_if_lt_x_gpu
from torch.testing._internal.common_utils import (
    instantiate_parametrized_tests,
    parametrize,
    run_tests,
)
from torch.testing._internal.distributed._tensor.common_dtensor import (
    DTensorContinuousTestBase,
    DTensorOpTestBase,
    DTensorTestBase,
    with_comms,
)


class ProcessStyleTest(DTensorTestBase):
    @property
    def world_size(self):
        return 2

    @with_comms
    def test_distribute_and_gather(self):
        mesh = self.build_device_mesh()
        full = torch.arange(8.0, device=self.device_type)
        dt = distribute_tensor(full, mesh, [Shard(0)])
        self.assertEqual(dt.to_local(), full.chunk(2)[self.rank])
        self.assertEqual(dt.full_tensor(), full)

    @with_comms
    @parametrize("scale", [1, 3])
    def test_all_reduce_scaled(self, scale):
        t = torch.ones(2) * scale
        dist.all_reduce(t)
        self.assertEqual(t, torch.full((2,), 2.0 * scale))

    @skip_if_lt_x_gpu(2)
    @with_comms
    def test_needs_two_gpus(self):
        self.assertEqual(torch.cuda.device_count() >= 2, True)

    @with_comms
    def test_known_failure(self):
        self.assertEqual(self.rank, 5)

    @unittest.expectedFailure
    @with_comms
    def test_expected_failure(self):
        self.assertEqual(torch.ones(1), torch.zeros(1))


instantiate_parametrized_tests(ProcessStyleTest)


class OpStyleTest(DTensorOpTestBase):
    def test_replicate_add(self):
        mesh = self.build_device_mesh()
        dt = distribute_tensor(torch.ones(4), mesh, [Replicate()])
        self.assertEqual((dt + dt).full_tensor(), torch.full((4,), 2.0))


class ContinuousStyleTest(DTensorContinuousTestBase):
    world_size = 2

    def test_mesh_size(self):
        mesh = self.build_device_mesh()
        self.assertEqual(mesh.size(), 2)

    def test_skip_inside(self):
        self.skipTest("skipped by the test itself")


if __name__ == "__main__":
    run_tests()
