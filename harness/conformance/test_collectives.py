"""Collectives: the c10d calls DTensor is built on, on the cell's backend.

Each rank contributes values that every dtype holds exactly (small integers,
powers of two for products), so results are compared exactly, and sizes that
no world size divides (7, 5x3) stand for the uneven shards DTensor makes.
"""

from __future__ import annotations

import re

import torch
import torch.distributed as dist

from harness import with_comms
from harness.conformance._base import ConformanceTestBase, all_ranks, needs, quiet

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.int64)
FLOATS = DTYPES[:3]
SHAPES = ((7,), (5, 3))  # element counts no world size > 1 divides evenly


def contribution(rank: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Rank ``rank``'s input: 1 or 2 per element (so any product stays exact)."""
    n = 1
    for d in shape:
        n *= d
    values = (torch.arange(n) + rank) % 2 + 1
    return values.reshape(shape).to(dtype)


def reduce(inputs: list[torch.Tensor], op: str) -> torch.Tensor:
    stacked = torch.stack([t.to(torch.int64) for t in inputs])
    if op == "SUM":
        out = stacked.sum(0)
    elif op == "PRODUCT":
        out = stacked.prod(0)
    elif op == "MIN":
        out = stacked.min(0).values
    elif op == "MAX":
        out = stacked.max(0).values
    elif op == "AVG":
        return (stacked.sum(0).double() / len(inputs)).to(inputs[0].dtype)
    else:  # bitwise
        out = inputs[0].clone()
        for t in inputs[1:]:
            out = {"BAND": out & t, "BOR": out | t, "BXOR": out ^ t}[op]
        return out
    return out.to(inputs[0].dtype)


# How c10d says a backend lacks a reduce op (NCCL has no bitwise ops, older gloo
# no AVG): raised on every rank before any communication, so it is a skip.
_NO_SUCH_OP = re.compile(r"Cannot use ReduceOp|not supported|unsupported", re.IGNORECASE)


class CollectivesTest(ConformanceTestBase):
    def _all_reduce(self, op: str, dtypes) -> None:
        reason = self._reduce_each(op, dtypes)
        if reason:  # outside subTest: a skipped subtest would leave the test "passed"
            self.skipTest(reason)

    def _reduce_each(self, op: str, dtypes) -> str | None:
        world = self.world_size
        for dtype in dtypes:
            for shape in SHAPES:
                with self.subTest(op=op, dtype=str(dtype), shape=shape):
                    tensor = self.per_rank(lambda r, s=shape, d=dtype: contribution(r, s, d))
                    tensor = tensor.to(self.device_type)
                    try:
                        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op))
                    except (RuntimeError, ValueError) as exc:
                        if not _NO_SUCH_OP.search(str(exc)):
                            raise
                        return (
                            f"backend {dist.get_backend()} offers no ReduceOp.{op} for "
                            f"{dtype}: {str(exc).splitlines()[0][:160]}"
                        )
                    expected = reduce(
                        all_ranks(world, lambda r, s=shape, d=dtype: contribution(r, s, d)), op
                    )
                    self.assertEqual(tensor.cpu(), expected, exact_dtype=True)
        return None

    @with_comms
    def test_all_reduce_sum(self):
        self._all_reduce("SUM", DTYPES)

    @with_comms
    def test_all_reduce_product(self):
        self._all_reduce("PRODUCT", DTYPES)

    @with_comms
    def test_all_reduce_min_max(self):
        self._all_reduce("MIN", DTYPES)
        self._all_reduce("MAX", DTYPES)

    @with_comms
    def test_all_reduce_avg(self):
        self._all_reduce("AVG", FLOATS)

    @with_comms
    def test_all_reduce_bitwise(self):
        for op in ("BAND", "BOR", "BXOR"):
            self._all_reduce(op, (torch.int64,))

    @with_comms
    @quiet
    def test_all_gather(self):
        world = self.world_size
        for dtype in DTYPES:
            with self.subTest(dtype=str(dtype)):
                mine = self.per_rank(lambda r, d=dtype: contribution(r, (7,), d) * (r + 1))
                mine = mine.to(self.device_type)
                expected = all_ranks(world, lambda r, d=dtype: contribution(r, (7,), d) * (r + 1))
                into = torch.empty(world * 7, dtype=dtype, device=self.device_type)
                dist.all_gather_into_tensor(into, mine)
                self.assertEqual(into.cpu(), torch.cat(expected))
                listed = [torch.empty_like(mine) for _ in range(world)]
                dist.all_gather(listed, mine)
                for got, want in zip(listed, expected):
                    self.assertEqual(got.cpu(), want)

    @with_comms
    @quiet
    def test_reduce_scatter(self):
        world = self.world_size
        for dtype in DTYPES:
            with self.subTest(dtype=str(dtype)):
                shape = (world * 3,)
                full = self.per_rank(lambda r, s=shape, d=dtype: contribution(r, s, d))
                out = torch.empty(3, dtype=dtype, device=self.device_type)
                dist.reduce_scatter_tensor(out, full.to(self.device_type))
                total = reduce(
                    all_ranks(world, lambda r, s=shape, d=dtype: contribution(r, s, d)), "SUM"
                )
                expected = self.per_rank(lambda r, t=total: t[3 * r : 3 * r + 3])
                self.assertEqual(out.cpu(), expected)

    @with_comms
    def test_broadcast_from_every_rank(self):
        for src in range(self.world_size):
            for dtype in DTYPES:
                with self.subTest(src=src, dtype=str(dtype)):
                    tensor = self.per_rank(lambda r, d=dtype: contribution(r, (5, 3), d) * (r + 1))
                    tensor = tensor.to(self.device_type)
                    dist.broadcast(tensor, src=src)
                    self.assertEqual(tensor.cpu(), contribution(src, (5, 3), dtype) * (src + 1))

    @with_comms
    def test_all_to_all(self):
        world = self.world_size
        for dtype in DTYPES:
            with self.subTest(dtype=str(dtype), splits="even"):
                # rank r sends value 100*r + j to rank j
                send = self.per_rank(lambda r, d=dtype: (torch.arange(world) + 10 * r).to(d))
                recv = torch.empty(world, dtype=dtype, device=self.device_type)
                dist.all_to_all_single(recv, send.to(self.device_type))
                expected = self.per_rank(lambda r, d=dtype: (torch.arange(world) * 10 + r).to(d))
                self.assertEqual(recv.cpu(), expected)

    @needs(local="each rank receives a different size, which one program cannot express")
    @with_comms
    def test_all_to_all_uneven_splits(self):
        world = self.world_size
        # rank r sends (j + 1) elements to rank j, valued r
        send_sizes = [j + 1 for j in range(world)]
        send = self.per_rank(lambda r: torch.full((sum(send_sizes),), r, dtype=torch.int64))
        recv_sizes = self.per_rank(lambda r: [r + 1] * world)
        recv = self.per_rank(lambda r: torch.empty(world * (r + 1), dtype=torch.int64))
        recv = recv.to(self.device_type)
        dist.all_to_all_single(
            recv,
            send.to(self.device_type),
            output_split_sizes=recv_sizes,
            input_split_sizes=send_sizes,
        )
        expected = self.per_rank(
            lambda r: torch.arange(world).repeat_interleave(r + 1).to(torch.int64)
        )
        self.assertEqual(recv.cpu(), expected)

    @with_comms
    def test_barrier(self):
        dist.barrier()
        dist.barrier()

    @needs(ranks=2, local="send/recv pairs need one process per rank")
    @with_comms
    def test_send_recv_ring(self):
        world, rank = self.world_size, int(self.rank)
        right, left = (rank + 1) % world, (rank - 1) % world
        for dtype in DTYPES:
            with self.subTest(dtype=str(dtype)):
                out = (contribution(rank, (7,), dtype) * (rank + 1)).to(self.device_type)
                into = torch.empty(7, dtype=dtype, device=self.device_type)
                ops = [dist.P2POp(dist.isend, out, right), dist.P2POp(dist.irecv, into, left)]
                for work in dist.batch_isend_irecv(ops):
                    work.wait()
                self.assertEqual(into.cpu(), contribution(left, (7,), dtype) * (left + 1))
