"""The threaded process group: every collective's data, DTensor on top, and isolation.

Each rank holds values that name it (rank r holds r + 1, or a row of r's), so a
result in the wrong place or from the wrong rank shows up as a wrong number.
Failure modes (one rank fails, hangs, calls another collective) are in
tests/test_ranks_failures.py, the same scenarios as process and pool mode.
"""

from __future__ import annotations

import unittest

import pytest
import torch
import torch.distributed as dist
from torch.distributed import ReduceOp

from harness import DTensorOpTestBase, DTensorTestBase, with_comms
from harness.ranks import Job, run_in_threads
from harness.ranks.threaded_pg import BACKEND

WS = 4


def mine(rank: int, n: int = 3) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32) + 10 * (rank + 1)


class Collectives(DTensorOpTestBase):
    @property
    def world_size(self) -> int:
        return WS

    def test_backend_and_ranks(self):
        self.assertEqual(dist.get_backend(), BACKEND)
        self.assertEqual(dist.get_rank(), self.rank)
        self.assertEqual(dist.get_world_size(), WS)

    def test_all_reduce_ops(self):
        values = [torch.tensor([float(r + 1), float(-r)]) for r in range(WS)]
        cases = {
            ReduceOp.SUM: torch.stack(values).sum(0),
            ReduceOp.AVG: torch.stack(values).mean(0),
            ReduceOp.MAX: torch.stack(values).amax(0),
            ReduceOp.MIN: torch.stack(values).amin(0),
            ReduceOp.PRODUCT: torch.stack(values).prod(0),
        }
        for op, expected in cases.items():
            t = values[self.rank].clone()
            dist.all_reduce(t, op=op)
            self.assertEqual(t, expected, msg=f"{op}")
        bits = torch.tensor([1 << self.rank | 16])
        dist.all_reduce(bits, op=ReduceOp.BOR)
        self.assertEqual(bits.item(), 0b11111)
        dist.all_reduce(bits, op=ReduceOp.BAND)
        self.assertEqual(bits.item(), 0b11111)

    def test_all_gather(self):
        outs = [torch.empty(3) for _ in range(WS)]
        dist.all_gather(outs, mine(self.rank))
        for r, out in enumerate(outs):
            self.assertEqual(out, mine(r))
        flat = torch.empty(WS * 3)
        dist.all_gather_into_tensor(flat, mine(self.rank))
        self.assertEqual(flat, torch.cat([mine(r) for r in range(WS)]))

    def test_reduce_scatter(self):
        full = torch.stack([mine(self.rank) + c for c in range(WS)])  # row c goes to rank c
        out = torch.empty(1, 3)
        dist.reduce_scatter_tensor(out, full)
        expected = sum(mine(r) + self.rank for r in range(WS))
        self.assertEqual(out[0], expected)
        outs = torch.empty(3)
        dist.reduce_scatter(outs, list(full), op=ReduceOp.MAX)
        self.assertEqual(outs, mine(WS - 1) + self.rank)

    def test_broadcast_scatter_gather_reduce(self):
        t = mine(self.rank)
        dist.broadcast(t, src=2)
        self.assertEqual(t, mine(2))

        out = torch.empty(3)
        dist.scatter(out, [mine(r) * 2 for r in range(WS)] if self.rank == 1 else None, src=1)
        self.assertEqual(out, mine(self.rank) * 2)

        gathered = [torch.empty(3) for _ in range(WS)] if self.rank == 3 else None
        dist.gather(mine(self.rank), gathered, dst=3)
        if self.rank == 3:
            self.assertEqual(torch.stack(gathered), torch.stack([mine(r) for r in range(WS)]))

        t = mine(self.rank)
        dist.reduce(t, dst=0)
        if self.rank == 0:
            self.assertEqual(t, sum(mine(r) for r in range(WS)))

    def test_all_to_all_uneven(self):
        # rank r sends k + 1 values to rank k, each value 100 * r + k
        sends = [k + 1 for k in range(WS)]
        inp = torch.cat([torch.full((k + 1,), 100.0 * self.rank + k) for k in range(WS)])
        recvs = [self.rank + 1] * WS
        out = torch.empty(sum(recvs))
        dist.all_to_all_single(out, inp, recvs, sends)
        expected = torch.cat(
            [torch.full((self.rank + 1,), 100.0 * r + self.rank) for r in range(WS)]
        )
        self.assertEqual(out, expected)

        outs = [torch.empty(2) for _ in range(WS)]
        dist.all_to_all(outs, [torch.full((2,), 10.0 * self.rank + k) for k in range(WS)])
        for r, got in enumerate(outs):
            self.assertEqual(got, torch.full((2,), 10.0 * r + self.rank))

    def test_send_recv_ring(self):
        dist.send(mine(self.rank), dst=(self.rank + 1) % WS)
        got = torch.empty(3)
        dist.recv(got, src=(self.rank - 1) % WS)
        self.assertEqual(got, mine((self.rank - 1) % WS))

    def test_subgroups_of_a_2d_mesh(self):
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
        t = torch.tensor([float(self.rank)])
        dist.all_reduce(t, group=mesh.get_group("tp"))  # {0, 1} and {2, 3}
        self.assertEqual(t.item(), {0: 1.0, 1: 1.0, 2: 5.0, 3: 5.0}[self.rank])
        t = torch.tensor([float(self.rank)])
        dist.all_reduce(t, group=mesh.get_group("dp"))  # {0, 2} and {1, 3}
        self.assertEqual(t.item(), {0: 2.0, 1: 4.0, 2: 2.0, 3: 4.0}[self.rank])

    def test_dtensor_redistribute_and_backward(self):
        from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

        mesh = self.build_device_mesh()
        x = torch.arange(32.0).reshape(8, 4)
        d = distribute_tensor(x, mesh, [Shard(0)])
        self.assertEqual(d.to_local(), x[2 * self.rank : 2 * self.rank + 2])
        self.assertEqual(d.redistribute(mesh, [Shard(1)]).full_tensor(), x)
        self.assertEqual(d.redistribute(mesh, [Replicate()]).to_local(), x)
        p = DTensor.from_local(torch.ones(4, 2) * (self.rank + 1), mesh, [Partial()])
        self.assertEqual(p.redistribute(mesh, [Shard(0)]).to_local(), torch.full((1, 2), 10.0))

        w = distribute_tensor(torch.ones(8, 4), mesh, [Shard(0)]).requires_grad_()
        (w * 3).sum().full_tensor().backward()
        self.assertEqual(w.grad.full_tensor(), torch.full((8, 4), 3.0))


class ProcessBaseOnThreads(DTensorTestBase):
    """Any base runs on threads with ``rank_mode = "threads"``; ``with_comms`` keeps working."""

    rank_mode = "threads"

    @property
    def world_size(self) -> int:
        return 2

    @with_comms
    def test_with_comms_uses_the_runners_group(self):
        self.assertEqual(dist.get_backend(), BACKEND)
        t = torch.tensor([self.rank + 1.0])
        dist.all_reduce(t)
        self.assertEqual(t.item(), 3.0)


def test_the_parent_keeps_its_own_torch_distributed():
    # after the threaded tests above ran in this process
    result = unittest.TestResult()
    Collectives("test_backend_and_ranks").run(result)
    assert result.wasSuccessful(), result.errors + result.failures
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="only works on the ranks of a threaded test"):
        dist.init_process_group(BACKEND, rank=0, world_size=1, store=dist.HashStore())


class _Mismatch(DTensorOpTestBase):
    __test__ = False  # run below through run_in_threads, not collected
    timeout = 4

    @property
    def world_size(self) -> int:
        return 2

    def test_mismatch(self):
        if self.rank == 0:
            dist.all_reduce(torch.ones(1))
        else:
            dist.broadcast(torch.ones(1), src=0)

    def test_missing_rank(self):
        if self.rank == 0:
            dist.barrier()

    def test_missing_sender(self):
        if self.rank == 0:
            dist.recv(torch.empty(1), src=1)


def _verdict(method: str):
    return run_in_threads(Job(_Mismatch(method), method, world_size=2, timeout=4, rerun="-"))


def test_a_mismatched_collective_names_each_ranks_call():
    v = _verdict("test_mismatch")
    assert v.status == "failed"
    assert "collective #0 on group '0' differs between ranks" in v.message
    assert "rank 0: allreduce, rank 1: broadcast" in v.message


def test_a_rank_that_left_without_joining_is_named_at_once():
    v = _verdict("test_missing_rank")
    assert v.status == "failed"
    assert "barrier #0 on group '0' cannot complete: rank 1 passed the test without" in v.message


def test_a_recv_whose_sender_left_without_sending_fails_at_once():
    # before: it waited for the timeout, then said "timed out"
    v = _verdict("test_missing_sender")
    assert v.status == "failed"
    assert "recv from group rank 1 (tag 0) on group '0' cannot complete: rank 1 passed " in (
        v.message
    )
