"""The threads base at world size 4 on one device, for bench/device_check.sh.

Upstream's op-coverage suites run their ranks as threads of one process; on a
one-GPU machine all four ranks share that GPU. The device and world size come
from HARNESS_DEVICE / HARNESS_WORLD_SIZE, so the same file checks the script on
CPU (``--cpu``) and the kit on cuda.
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

from harness import DTensorOpTestBase, with_comms


class ThreadsOnOneDevice(DTensorOpTestBase):
    def _full(self, *shape: int) -> torch.Tensor:
        torch.manual_seed(0)  # every rank thread builds the same global tensor
        return torch.randn(*shape, device=self.device_type)

    @with_comms
    def test_ranks_share_the_device(self):
        mesh = self.build_device_mesh()
        self.assertEqual(mesh.size(), self.world_size)
        local = torch.full((2,), float(self.rank), device=self.device_type)
        dt = DTensor.from_local(local, mesh, [Shard(0)])
        self.assertEqual(dt.device.type, self.device_type)
        gathered = dt.full_tensor()
        expected = torch.arange(self.world_size, device=self.device_type).repeat_interleave(2)
        self.assertEqual(gathered, expected.float())

    @with_comms
    def test_sharded_matmul_matches_dense(self):
        mesh = self.build_device_mesh()
        a, b = self._full(8, 16), self._full(16, 4)
        da = distribute_tensor(a, mesh, [Shard(0)])
        db = distribute_tensor(b, mesh, [Replicate()])
        self.assertEqual((da @ db).full_tensor(), a @ b)

    @with_comms
    def test_redistribute_round_trip(self):
        mesh = self.build_device_mesh()
        x = self._full(12, 8)
        dx = distribute_tensor(x, mesh, [Shard(1)])
        back = dx.redistribute(mesh, [Shard(0)]).redistribute(mesh, [Replicate()])
        self.assertEqual(back.to_local(), x)
