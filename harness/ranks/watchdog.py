"""A test body still running at its timeout, on one external rank."""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import traceback
from collections.abc import Callable
from os import getpid  # not through `os`: tests stand in for os._exit
from typing import Any

from harness.ranks.clock import STRETCH, Clock
from harness.ranks.peers import shut_peer_connections

# Where a hung rank's stacks go: stderr as it was before pytest captured it.
_STACKS: Any = None
# What a rank that gives up does before it exits: write its results (external_main
# sets it). Without it, a rank 0 that gave up took the merged JUnit XML with it.
LAST_WORDS: Callable[[Watchdog], None] | None = None


def keep_stderr() -> None:
    """Remember this process's stderr now, before pytest's capture replaces fd 2."""
    global _STACKS
    _STACKS = os.fdopen(os.dup(2), "w", buffering=1)


class Watchdog:
    """What happens to a test body still running at its timeout, on this rank.

    The timeout counts this rank's time not spent waiting for a CPU
    (:mod:`harness.ranks.clock`). At the timeout the rank prints every thread's stack and shuts its peer
    connections, so a collective it (or a peer) is stuck in fails now; it then
    reports "still running at the timeout" with the stack of where it was. A
    body stuck outside any collective gets a short grace, then the rank tells the
    others why through the store and exits. If it holds the GIL so no timer can
    run, faulthandler ends it later and the others see its heartbeat stop.
    """

    def __init__(self, s: Any, name: str, timeout: float, key: str = "") -> None:
        self.s, self.name, self.timeout = s, name, timeout
        self.key = key or name  # the test as the ranks agree on it
        self.grace = min(10.0, max(2.0, timeout / 2))
        self.stack = ""
        self.fired = False
        # The body can end (its collective failing because this rank just shut its
        # connections) while _at_timeout is still running: the grace timer must
        # then not start, or it would call a finished test hung and exit the rank.
        self._lock = threading.Lock()
        self._ended = False
        self.out = _STACKS or sys.__stderr__
        self.main = threading.get_ident()
        self.clock = Clock(timeout)  # this rank's time not spent waiting for a CPU
        self._stop = threading.Event()
        watch = threading.Thread(target=self._watch, name="harness watchdog", daemon=True)
        self.timers: list[threading.Timer] = []
        watch.start()
        # the last resort for a body that holds the GIL, after the longest the clock stretches
        last = timeout * STRETCH + self.grace + 30.0
        faulthandler.dump_traceback_later(last, exit=True, file=self.out)

    def _watch(self) -> None:
        while not self._stop.wait(self.clock.left()):
            self.clock.tick([getpid()])
            if self.clock.expired():
                self._at_timeout()
                return

    def _dump(self, what: str) -> None:
        rank = self.s.launch.rank
        print(f"\nharness: rank {rank}: {self.name} {what}", file=self.out, flush=True)
        faulthandler.dump_traceback(file=self.out, all_threads=True)
        self.out.flush()

    def _at_timeout(self) -> None:
        frame = sys._current_frames().get(self.main)
        frames = traceback.format_stack(frame) if frame is not None else []
        body = [i for i, f in enumerate(frames) if "in _run_body" in f]  # the test's own frames
        self.stack = "".join(frames[body[-1] + 1 :] if body else frames)
        self.fired = True
        note = self.clock.note()
        self._dump(
            f"still running after {self.timeout:g} s{f' ({note})' if note else ''}; "
            "every thread's stack follows"
        )
        shut_peer_connections(keep_port=self.s.launch.master_port)
        with self._lock:
            if self._ended:
                return
            last = threading.Timer(self.grace, self._give_up)
            last.daemon = True
            self.timers.append(last)
            last.start()

    def _give_up(self) -> None:
        with self._lock:
            if self._ended:
                return
        rank = self.s.launch.rank
        self.s.say_gone(
            f"it hung past the {self.timeout:g} s per-test timeout outside any collective; "
            f"it printed every thread's stack (its stderr, or results/<cell>/ranks/"
            f"rank{rank}.log) and exited"
        )
        self._dump(f"still stuck {self.grace:g} s after the timeout; this rank exits")
        if LAST_WORDS is not None:
            try:
                LAST_WORDS(self)  # its results first: the test's verdict, its JUnit XML
            except BaseException:  # noqa: BLE001 (exiting anyway; say why on the way out)
                traceback.print_exc(file=self.out)
        self.out.flush()
        os._exit(1)

    def cancel(self) -> None:
        """The body ended: no timer of this test may act any more."""
        with self._lock:
            self._ended = True
        self._stop.set()
        for timer in self.timers:
            timer.cancel()
        faulthandler.cancel_dump_traceback_later()
