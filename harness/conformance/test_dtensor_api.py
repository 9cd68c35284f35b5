"""The DTensor API: distribute, from_local/to_local, full_tensor, redistribute.

Every redistribution between Shard, Replicate and Partial is checked against
the plain tensor it stands for, on shapes that no world size divides, so the
uneven last shards are covered too.
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

from harness import with_comms
from harness.conformance._base import ConformanceTestBase, needs

SHAPES = ((8, 6), (7, 5))  # even where the world size divides 8, uneven elsewhere


def reference(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The same tensor on every rank, without touching the RNG."""
    n = 1
    for d in shape:
        n *= d
    return (torch.arange(n, dtype=torch.float64).reshape(shape) / 3 - 2).to(dtype)


def shard_bounds(length: int, world: int, rank: int) -> tuple[int, int]:
    """Where rank's shard of a dimension of ``length`` starts and ends (torch.chunk's rule)."""
    size = -(-length // world)
    start = min(rank * size, length)
    return start, min(start + size, length)


class DTensorApiTest(ConformanceTestBase):
    @with_comms
    def test_distribute_and_full_tensor(self):
        mesh = self.mesh((self.world_size,))
        world = self.world_size
        for shape in SHAPES:
            full = reference(shape).to(self.device_type)
            for placement in (Shard(0), Shard(1), Replicate()):
                with self.subTest(shape=shape, placement=str(placement)):
                    dt = distribute_tensor(full, mesh, [placement])
                    self.assertIsInstance(dt, DTensor)
                    self.assertEqual(tuple(dt.shape), shape)
                    self.assertEqual(dt.placements, (placement,))
                    self.assertEqual(dt.full_tensor(), full)
                    if isinstance(placement, Shard):
                        dim = placement.dim

                        def expected_local(r, dim=dim, shape=shape):
                            start, end = shard_bounds(shape[dim], world, r)
                            return reference(shape).narrow(dim, start, end - start)

                        self.assertEqual(dt.to_local().cpu(), self.per_rank(expected_local))
                    else:
                        self.assertEqual(dt.to_local(), full)

    @with_comms
    def test_from_local_to_local(self):
        mesh = self.mesh((self.world_size,))
        world = self.world_size
        local = self.per_rank(lambda r: reference((3, 4)) + r).to(self.device_type)
        dt = DTensor.from_local(local, mesh, [Shard(0)])
        self.assertEqual(tuple(dt.shape), (3 * world, 4))
        self.assertEqual(dt.to_local(), local)
        full = torch.cat([reference((3, 4)) + r for r in range(world)])
        self.assertEqual(dt.full_tensor().cpu(), full)
        # Partial: the full tensor is the sum of every rank's local tensor
        partial = DTensor.from_local(local, mesh, [Partial()])
        self.assertEqual(
            partial.full_tensor().cpu(), sum(reference((3, 4)) + r for r in range(world))
        )

    @with_comms
    def test_redistribute_between_placements(self):
        mesh = self.mesh((self.world_size,))
        placements = (Shard(0), Shard(1), Replicate())
        for shape in SHAPES:
            full = reference(shape).to(self.device_type)
            for src in placements:
                for dst in placements:
                    with self.subTest(shape=shape, src=str(src), dst=str(dst)):
                        moved = distribute_tensor(full, mesh, [src]).redistribute(mesh, [dst])
                        self.assertEqual(moved.placements, (dst,))
                        self.assertEqual(moved.full_tensor(), full)

    @with_comms
    def test_partial_reductions(self):
        mesh = self.mesh((self.world_size,))
        world = self.world_size
        shape = (2 * world, 3)
        local = self.per_rank(lambda r: reference(shape) * (r + 1)).to(self.device_type)
        total = sum(reference(shape) * (r + 1) for r in range(world))
        for dst in (Replicate(), Shard(0), Shard(1)):
            with self.subTest(dst=str(dst)):
                partial = DTensor.from_local(local, mesh, [Partial()])
                moved = partial.redistribute(mesh, [dst])
                self.assertEqual(moved.full_tensor().cpu(), total)
        largest = DTensor.from_local(local, mesh, [Partial("max")]).redistribute(
            mesh, [Replicate()]
        )
        top = torch.stack([reference(shape) * (r + 1) for r in range(world)]).amax(0)
        self.assertEqual(largest.to_local().cpu(), top)

    @with_comms
    def test_ops_and_autograd_on_shards(self):
        mesh = self.mesh((self.world_size,))
        a = reference((7, 6)).to(self.device_type).requires_grad_()
        b = reference((6, 5)).to(self.device_type) / 4
        da = distribute_tensor(a.detach(), mesh, [Shard(0)]).requires_grad_()
        db = distribute_tensor(b, mesh, [Replicate()])
        out = torch.relu(da @ db + 1).sum()
        expected = torch.relu(a @ b + 1).sum()
        self.assertEqual(out.full_tensor(), expected, atol=1e-4, rtol=1e-5)
        out.backward()
        expected.backward()
        self.assertEqual(da.grad.full_tensor(), a.grad, atol=1e-4, rtol=1e-5)

    @needs(ranks=4, even=True)
    @with_comms
    def test_2d_placements(self):
        world = self.world_size
        mesh = self.mesh((2, world // 2), ("dp", "tp"))
        full = reference((7, 10)).to(self.device_type)
        layouts = ((Shard(0), Shard(1)), (Shard(1), Shard(0)), (Replicate(), Shard(0)),
                   (Shard(0), Replicate()), (Shard(0), Shard(0)))  # fmt: skip
        for src in layouts:
            for dst in layouts:
                with self.subTest(src=str(src), dst=str(dst)):
                    moved = distribute_tensor(full, mesh, list(src)).redistribute(mesh, list(dst))
                    self.assertEqual(moved.full_tensor(), full)
