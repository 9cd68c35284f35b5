"""Threads mode: a verdict even when a signal ends the whole test process.

A rank thread that faults in native code (SIGSEGV, SIGABRT, SIGBUS, SIGFPE,
SIGILL) takes pytest and every other rank with it, and no Python runs after.
So the first threads test starts a watcher (``_last_words_watch.py``, its own
interpreter) holding a pipe from this process: the runner writes into it which
test runs and which thread is which rank, and faulthandler writes its dump (the
faulting thread first) into it too. When the pipe ends in the middle of a test,
the watcher writes that test's verdict ("rank 1 crashed: killed by SIGSEGV") to
stderr and, when pytest was asked for one, as the JUnit XML. Torch-free.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

WATCH = Path(__file__).with_name("_last_words_watch.py")
RECORD = b"\x1e"  # starts a line of ours; anything else in the pipe is faulthandler's

# Where the verdict goes: set by the pytest plugin at configure (before capture).
_where: dict = {"stderr": None, "junit": "", "suite": "pytest"}
_watcher: dict = {"pid": None, "proc": None}


def configure(stderr_fd: int, junit: str | None, suite: str | None) -> None:
    """The real stderr (a dup of it), pytest's --junitxml file and its suite name."""
    _where.update(stderr=stderr_fd, junit=junit or "", suite=suite or "pytest")


def _pipe() -> int:
    """The write end of this process's watcher pipe (started on first use)."""
    if _watcher["pid"] != os.getpid():  # first use, or a forked child: its own watcher
        stderr = _where["stderr"]
        _watcher["proc"] = subprocess.Popen(
            [sys.executable, "-I", str(WATCH), _where["junit"], _where["suite"]],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr if stderr is not None else None,
            start_new_session=True,  # Ctrl-C of the run must not silence it
        )
        _watcher["pid"] = os.getpid()
    return _watcher["proc"].stdin.fileno()


def _send(kind: str, text: str = "") -> None:
    with contextlib.suppress(OSError):  # a watcher that died costs its verdict, nothing else
        os.write(_pipe(), RECORD + f"{kind} {text}\n".encode())


@contextlib.contextmanager
def watching(test: str, classname: str, method: str, rerun: str) -> Iterator[None]:
    """While a threads test runs, a fatal signal leaves its verdict behind."""
    record = {"test": test, "classname": classname, "name": method, "rerun": rerun}
    _send("T", json.dumps(record))
    was_enabled = faulthandler.is_enabled()
    faulthandler.enable(file=_pipe(), all_threads=True)
    try:
        yield
    finally:
        if was_enabled:  # back to the stream pytest (or python -X faulthandler) chose
            faulthandler.enable(file=_where["stderr"] or sys.__stderr__, all_threads=True)
        else:
            faulthandler.disable()
        _send("E")


def rank_thread(rank: int) -> None:
    """Called on each rank thread: the watcher learns which thread is which rank."""
    _send("R", f"{threading.get_ident()} {rank}")
