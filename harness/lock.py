"""One run per results folder: an advisory lock that names its holder.

Two runs of one cell into one folder would overwrite each other's JUnit XML and
report and mix their output. The second one refuses, naming the first one's PID,
unless asked to wait. ``flock`` ends with the process that holds it, however it
ends (SIGKILL included), so a stale lock cannot outlive its run. Torch-free.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from harness.errors import UsageError

LOCK = ".harness.lock"


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 200).decode("utf-8", "replace").strip() or "another run"


@contextlib.contextmanager
def hold(folder: str | os.PathLike, what: str, wait: float | None = 0.0) -> Iterator[int]:
    """Hold ``folder``'s lock for the body; ``wait`` seconds (None: forever) for it.

    Yields the lock's file descriptor: pass it to the child (``pass_fds``) so the
    folder stays locked while the child runs, even if this process is killed. A run
    that cannot get it raises UsageError naming the holder (its PID and command).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if wait is None else time.monotonic() + wait
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise UsageError(
                        f"{folder} is in use by {_holder(fd)}; wait for it, pass --wait, "
                        "or give this run its own folder (--results/--out DIR)"
                    ) from None
                if not announced:
                    print(f"harness: waiting for {_holder(fd)} to finish with {folder}", flush=True)
                    announced = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({what})\n".encode(), 0)
        yield fd
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the flock
