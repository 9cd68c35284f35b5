"""Random ops: DTensor's RNG keeps replicas identical and shards distinct.

Dropout on a replicated tensor must drop the same elements on every rank (or
the replicas silently diverge); on a sharded tensor each shard must draw its
own part of one random stream, not repeat the same mask; and the same seed
must give the same sharded random tensor again.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

from harness import with_comms
from harness.conformance._base import ConformanceTestBase, needs

# torch's offset-based DTensor RNG serves accelerator meshes only; on a CPU mesh
# every rank draws from its own generator (torch warns "may not have complete
# support on cpu device mesh"), so only the seeded replica check applies there.
CPU_RNG = "DTensor's offset-based RNG does not serve cpu meshes (torch warns so); accelerator cells run this"


class RandomTest(ConformanceTestBase):
    def _needs_rng_tracker(self) -> None:
        if self.device_type == "cpu":
            self.skipTest(CPU_RNG)

    def _gather(self, local: torch.Tensor) -> list[torch.Tensor]:
        parts = torch.empty(self.world_size * local.numel(), dtype=local.dtype, device=local.device)
        dist.all_gather_into_tensor(parts, local.contiguous().reshape(-1))
        return list(parts.reshape(self.world_size, *local.shape).cpu())

    @with_comms
    def test_dropout_is_identical_on_replicas(self):
        mesh = self.mesh((self.world_size,))
        torch.manual_seed(5)
        ones = distribute_tensor(torch.ones(16, 16, device=self.device_type), mesh, [Replicate()])
        dropped = F.dropout(ones, p=0.5, training=True)
        self.assertEqual(dropped.placements, (Replicate(),))
        replicas = self._gather(dropped.to_local())
        for rank, replica in enumerate(replicas[1:], 1):
            self.assertEqual(
                replica, replicas[0], msg=f"rank {rank}'s replica differs from rank 0's"
            )
        kept = (replicas[0] != 0).float().mean().item()
        self.assertTrue(0.3 < kept < 0.7, f"dropout(p=0.5) kept {kept:.0%} of the elements")

    @needs(ranks=2)
    @with_comms
    def test_dropout_masks_differ_between_shards(self):
        self._needs_rng_tracker()
        mesh = self.mesh((self.world_size,))
        torch.manual_seed(5)
        ones = torch.ones(self.world_size * 16, 16, device=self.device_type)
        dropped = F.dropout(distribute_tensor(ones, mesh, [Shard(0)]), p=0.5, training=True)
        masks = [m != 0 for m in self._gather(dropped.to_local())]
        self.assertFalse(
            all(torch.equal(masks[0], m) for m in masks[1:]),
            "every shard drew the same dropout mask: the shards share one random offset",
        )

    @with_comms
    def test_same_seed_same_random_dtensor(self):
        from torch.distributed.tensor import rand

        self._needs_rng_tracker()
        mesh = self.mesh((self.world_size,))
        draws = []
        for _ in range(2):
            torch.manual_seed(11)
            draws.append(rand(self.world_size * 4, 8, device_mesh=mesh, placements=[Shard(0)]))
        first, second = (d.full_tensor() for d in draws)
        self.assertEqual(first, second)
        self.assertTrue(bool(((first >= 0) & (first < 1)).all()))
        replicated = rand(4, 4, device_mesh=mesh, placements=[Replicate()])
        replicas = self._gather(replicated.to_local())
        for replica in replicas[1:]:
            self.assertEqual(replica, replicas[0])
