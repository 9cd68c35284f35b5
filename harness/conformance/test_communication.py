"""Communication and local shapes: what DTensor decides, checked the same in every cell.

The collectives each redistribution issues (kind, mesh dimension, bytes per
rank) and the local shard shapes and strides of uneven tensors follow from the
placements alone, so these tests run in native, ``-sim`` and ``fake`` cells
alike: they are marked :func:`harness.shapes_only`.
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

from harness import compat, shapes_only, with_comms
from harness.conformance._base import ConformanceTestBase, needs

ROWS, COLS = 2, 4  # each rank's local block (float32: 32 bytes)
LOCAL_BYTES = ROWS * COLS * 4
#: The first torch whose redistribute skips the collective of a one-rank mesh dim
#: (pytorch/pytorch#163742); torch 2.7.1 still runs it (2.8 and 2.9 not run here).
ONE_RANK_SHORTCUT = (2, 10)


def chunk_rows(length: int, world: int, rank: int) -> int:
    """Rows rank holds of a dimension of ``length`` split by Shard (torch.chunk's rule)."""
    size = -(-length // world)
    return max(0, min(length, (rank + 1) * size) - min(length, rank * size))


@shapes_only
class CommunicationTest(ConformanceTestBase):
    def local(self, mesh, placement, rows: int = ROWS) -> DTensor:
        """A DTensor from this rank's block, made without any collective."""
        block = torch.zeros(rows, COLS, device=self.device_type)
        return DTensor.from_local(block, mesh, [placement], run_check=False)

    @with_comms
    def test_redistribute_issues_one_collective_each(self):
        mesh = self.mesh((self.world_size,), ("world",))
        world = self.world_size
        cases = (  # from, to, the collective, the bytes this rank sends
            (Shard(0), Replicate(), "all_gather", LOCAL_BYTES),
            (Partial(), Replicate(), "all_reduce", LOCAL_BYTES),
            (Replicate(), Shard(0), None, 0),
        )
        for src, dst, kind, sent in cases:
            with self.subTest(src=str(src), dst=str(dst)):
                rows = ROWS * world if isinstance(dst, Shard) else ROWS
                dt = self.local(mesh, src, rows)
                if world == 1 and compat.torch_version() >= ONE_RANK_SHORTCUT:
                    kind, sent = None, 0  # a dimension of one rank communicates nothing
                expected = {kind: 1} if kind else {}
                with self.assertCollectives(
                    expected, mesh=mesh, mesh_dim="world", bytes_per_rank=sent
                ):
                    out = dt.redistribute(mesh, [dst])
                self.assertEqual(out.placements, (dst,))
                self.assertEqual(tuple(out.shape), tuple(dt.shape))

    @needs(ranks=2, even=True)
    @with_comms
    def test_partial_to_shard_reduce_scatters(self):
        world = self.world_size
        mesh = self.mesh((world,), ("world",))
        dt = self.local(mesh, Partial(), ROWS * world)
        with self.assertCollectives({"reduce_scatter": 1}, mesh=mesh, mesh_dim=0) as ledger:
            out = dt.redistribute(mesh, [Shard(0)])
        self.assertEqual(ledger.bytes_per_rank(), LOCAL_BYTES * world)
        self.assertEqual(tuple(out.to_local().shape), (ROWS, COLS))

    @needs(ranks=4, even=True)
    @with_comms
    def test_collectives_name_their_mesh_dim(self):
        world = self.world_size
        mesh = self.mesh((2, world // 2), ("dp", "tp"))
        block = torch.zeros(ROWS, COLS, device=self.device_type)
        dt = DTensor.from_local(block, mesh, [Shard(0), Shard(1)], run_check=False)
        expected = {("all_gather", "tp"): 1, ("all_gather", "dp"): 1}
        # tp's gather sends this rank's block; dp's then sends the tp-gathered row
        sent = LOCAL_BYTES + LOCAL_BYTES * (world // 2)
        with self.assertCollectives(expected, mesh=mesh, bytes_per_rank=sent) as ledger:
            out = dt.redistribute(mesh, [Replicate(), Replicate()])
        self.assertEqual(tuple(out.shape), (2 * ROWS, world // 2 * COLS))
        self.assertEqual(len(ledger.records), 2)

    @with_comms
    def test_uneven_local_shapes_and_strides(self):
        world = self.world_size
        mesh = self.mesh((world,))
        for length in (world + 1, 2 * world - 1, 3):
            with self.subTest(length=length):
                full = torch.empty(length, 5, device=self.device_type)
                with self.assertCollectives({}, mesh=mesh):
                    dt = distribute_tensor(full, mesh, [Shard(0)], src_data_rank=None)
                self.assertEqual(tuple(dt.shape), (length, 5))
                self.assertEqual(dt.stride(), (5, 1))
                self.assert_per_rank(
                    list(dt.to_local().shape), lambda r, n=length: [chunk_rows(n, world, r), 5]
                )
