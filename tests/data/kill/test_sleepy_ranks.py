"""Ranks that stay in their test body until killed (tests/test_nothing_left_behind.py)."""

import os
import time
from pathlib import Path

from harness import DTensorTestBase


class SleepyRanks(DTensorTestBase):
    @property
    def world_size(self):
        return 2

    def test_sleeps(self):
        Path(os.environ["SLEEPY_DIR"], f"rank{self.rank}").write_text(str(os.getpid()))
        time.sleep(120)
