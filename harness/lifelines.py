"""What must end with the process that started it, however that process ends.

SIGKILL runs no cleanup code, so both tools here work without the dying process:

- :func:`die_with_parent`: the kernel kills this process when its parent ends
  (``PR_SET_PDEATHSIG``); for processes the harness starts (pytest under
  ``harness run``, torchrun's agent) and for torchrun's ranks, which ask it
  themselves;
- :class:`Lifeline`: for what no signal reaches, such as a container the engine's
  daemon keeps running. A watcher process holds the read end of a pipe whose one
  writer is this process; EOF without a word (this process is gone) makes it run
  a command, e.g. ``docker rm -f NAME``.

Torch-free and stdlib-only: the CLI, the containers and the ranks use it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["Lifeline", "die_with_parent"]

_PR_SET_PDEATHSIG = 1

# The watcher: one byte means "ended well, do nothing"; EOF alone means the
# process that started it is gone (or wants the command now): run it.
_WATCHER = (
    "import subprocess, sys\n"
    "if not sys.stdin.buffer.read(1):\n"
    "    subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,\n"
    "                   stderr=subprocess.DEVNULL, check=False)\n"
)


def die_with_parent(parent: int | None = None) -> None:
    """Ask Linux to SIGKILL this process when its parent ends (a no-op elsewhere).

    Usable as ``preexec_fn``. ``parent``: the pid the parent must still have; if
    it ended before the request (this process was reparented), end now. The
    signal comes when the parent *thread* that started this process ends, so
    start such children from a thread that lives as long as its process.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


class Lifeline:
    """Runs ``argv`` once this process is gone, unless :meth:`cut` first.

    The watcher sits in its own session, so Ctrl-C or a kill of this process's
    group does not take it down with the rest. The pipe's write end is not
    inherited by other children (``subprocess`` closes it for them); a child
    made by a bare ``fork`` would keep the watcher waiting until it ends too.
    """

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self._watcher = subprocess.Popen(
            [sys.executable, "-I", "-c", _WATCHER, *self.argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self._watcher.pid

    def cut(self) -> None:
        """What it guards ended well: the watcher leaves without running ``argv``."""
        self._end(b"x")

    def pull(self) -> None:
        """Run ``argv`` now, and wait for it."""
        self._end(b"")

    def _end(self, word: bytes) -> None:
        pipe = self._watcher.stdin
        if pipe is not None and not pipe.closed:
            try:
                pipe.write(word)
                pipe.close()
            except OSError:  # the watcher is gone already
                pass
        self._watcher.wait()
