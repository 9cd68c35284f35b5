"""Failure scenarios for tests/test_ranks_failures.py, run in a pytest subprocess.

Every test body records its rank's pid in $SCENARIO_PIDS, so the last class
can check that no rank of an earlier test or class is still alive.
"""

import ctypes
import os
import signal
import threading
import time

import torch
import torch.distributed as dist

from harness import DTensorContinuousTestBase, DTensorOpTestBase, DTensorTestBase, with_comms
from harness.bases import timeout_after


def record_pid():
    folder = os.environ.get("SCENARIO_PIDS")
    if threading.current_thread() is not threading.main_thread():
        return  # a rank thread: its process is the test run itself
    if folder:
        with open(os.path.join(folder, f"{os.getpid()}.pid"), "w") as f:
            f.write(str(os.getpid()))


class Scenarios:
    """Mixed into the process, pool and threads bases at world sizes 1, 2 and 4."""

    def last(self):
        return self.rank == self.world_size - 1

    @with_comms
    def test_pass(self):
        record_pid()
        t = torch.ones(3)
        dist.all_reduce(t)
        self.assertEqual(t, torch.full((3,), float(self.world_size)))

    @with_comms
    def test_exception_on_one_rank(self):
        record_pid()
        if self.last():
            raise ValueError(f"boom on rank {self.rank}")
        dist.barrier()

    @with_comms
    def test_assert_on_one_rank(self):
        record_pid()
        self.assertEqual(torch.tensor([1.0]), torch.tensor([2.0 if self.last() else 1.0]))

    @with_comms
    def test_skip_on_one_rank(self):
        record_pid()
        if self.last():
            self.skipTest("only the last rank skips")
        dist.barrier()

    @with_comms
    def test_crash_exit(self):
        record_pid()
        if self.last():
            os._exit(3)
        dist.barrier()

    @with_comms
    def test_crash_sigkill(self):
        record_pid()
        if self.last():
            os.kill(os.getpid(), signal.SIGKILL)
        dist.barrier()

    @with_comms
    def test_crash_segv(self):
        record_pid()
        if self.last():
            ctypes.string_at(0)
        dist.barrier()

    @timeout_after(3)
    @with_comms
    def test_hang(self):
        record_pid()
        if self.last():
            time.sleep(60)
        dist.barrier()

    @timeout_after(3)
    @with_comms
    def test_mismatched_collective(self):
        record_pid()
        t = torch.ones(4)
        if self.rank == 0:
            dist.all_reduce(t)
        else:
            dist.all_gather_into_tensor(torch.empty(4 * self.world_size), t)

    @with_comms
    def test_zz_after_failures(self):
        record_pid()
        t = torch.ones(1)
        dist.all_reduce(t)
        self.assertEqual(t.item(), self.world_size)


class ThreadScenarios(Scenarios):
    """A crashing rank thread takes the test process with it: those three are not run."""

    def test_crash_exit(self):
        self.skipTest("a crash ends the whole process in threads mode")

    test_crash_sigkill = test_crash_segv = test_crash_exit


def _classes():
    made = {}
    kinds = (
        ("Proc", Scenarios, DTensorTestBase),
        ("Pool", Scenarios, DTensorContinuousTestBase),
        ("Thr", ThreadScenarios, DTensorOpTestBase),
    )
    for ws in (1, 2, 4):
        for kind, scenarios, base in kinds:
            name = f"{kind}{ws}"
            attrs = {"world_size": ws, "__module__": __name__, "__qualname__": name}
            made[name] = type(name, (scenarios, base), attrs)
    return made


globals().update(_classes())


class TestZZNoLeftovers(DTensorTestBase):
    world_size = 1

    def test_no_rank_left(self):
        folder = os.environ["SCENARIO_PIDS"]
        alive = []
        for name in os.listdir(folder):
            pid = int(name.split(".")[0])
            try:
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        assert folder and not alive, f"rank processes still alive: {alive}"
