"""A rank thread faults in native code (tests/test_threads_exit.py): nothing in the
process survives that, but the verdict still names the test, the rank and the signal."""

import ctypes

import torch
import torch.distributed as dist

from harness import DTensorOpTestBase


class ThreadSegfault(DTensorOpTestBase):
    @property
    def world_size(self):
        return 2

    def test_a_passes_first(self):
        dist.all_reduce(torch.ones(1))

    def test_b_rank_faults(self):
        if self.rank == 1:
            ctypes.string_at(0)  # reads address 0: SIGSEGV on this thread
        dist.all_reduce(torch.ones(1))
