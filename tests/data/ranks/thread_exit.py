"""A rank thread calls os._exit, or sends itself a fatal signal (tests/test_threads_exit.py):
that rank crashed, the test fails naming it and its code or signal, and the process lives
on to run the next test."""

import os
import signal
import threading

import torch
import torch.distributed as dist

from harness import DTensorOpTestBase


class ThreadExit(DTensorOpTestBase):
    @property
    def world_size(self):
        return 2

    def test_a_rank_calls_os_exit(self):
        if self.rank == 1:
            os._exit(17)
        t = torch.ones(1)
        dist.all_reduce(t)  # rank 0 waits for rank 1, which is gone

    def test_a_rank_kills_itself_with_sigsegv(self):
        if self.rank == 1:
            os.kill(os.getpid(), signal.SIGSEGV)
        dist.all_reduce(torch.ones(1))

    def test_a_rank_raises_sigkill(self):
        if self.rank == 0:
            signal.raise_signal(signal.SIGKILL)
        dist.all_reduce(torch.ones(1))

    def test_a_rank_aborts_its_own_thread(self):
        if self.rank == 1:
            signal.pthread_kill(threading.get_ident(), signal.SIGABRT)
        dist.all_reduce(torch.ones(1))

    def test_a_rank_calls_os_abort(self):
        if self.rank == 0:
            os.abort()
        dist.all_reduce(torch.ones(1))

    def test_b_later_test_runs(self):
        t = torch.ones(1)
        dist.all_reduce(t)
        self.assertEqual(t.item(), 2.0)
