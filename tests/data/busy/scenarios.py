"""Tests for tests/test_busy_host.py, run in a pytest subprocess while CPU burners
saturate the host: one computes past its limit in wall time, one truly hangs."""

import time

import torch.distributed as dist

from harness import DTensorContinuousTestBase, DTensorOpTestBase, with_comms
from harness.bases import timeout_after

LIMIT = 4


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class Busy:
    #: CPU seconds all ranks compute together: under the limit, past it in wall time
    #: on a busy host (threads share one interpreter, so they take turns).
    work = 2.0

    @timeout_after(LIMIT)
    @with_comms
    def test_computes(self):
        burn(self.work / (self.world_size if isinstance(self, DTensorOpTestBase) else 1))
        dist.barrier()

    @timeout_after(LIMIT)
    @with_comms
    def test_hangs(self):
        if self.rank == 1:
            time.sleep(60)
        dist.barrier()


class TestPool(Busy, DTensorContinuousTestBase):
    """Pool mode; process mode waits on its ranks the same way (RankGroup.collect), with
    their start-up (importing torch: about 2 CPU seconds a rank) inside the limit."""

    world_size = 2


class TestThreads(Busy, DTensorOpTestBase):
    world_size = 2
