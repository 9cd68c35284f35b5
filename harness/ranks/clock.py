"""A test's clock that stops while the host keeps its processes waiting for a CPU.

A per-test limit is there to catch hangs. On a loaded host (8 ranks on 2 busy
cores) a rank that computes spends most of its wall time in the run queue, waiting
for a core; a wall-clock limit then calls slowness a hang. Linux counts that wait
per thread (``/proc/<pid>/task/<tid>/schedstat``, its second field), so the clock
here advances by wall time less the longest wait of any thread of the most starved
process it watches. A process that is blocked (in a collective, in ``sleep``)
waits for no CPU, and one that spins on an idle host waits for none either: for a
true hang the clock runs at wall speed and the limit holds to the second. A
process that computes under load stretches it, up to ``STRETCH`` times in wall
time, so a loop that never ends still ends. Where schedstat cannot be read (not
Linux, a process gone), the clock is the wall clock.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable

#: The wall time a limit may stretch to under load, as a multiple of the limit.
STRETCH = 30.0
#: Seconds between two looks at the processes (a caller's wait is cut to this).
TICK = 0.5


def run_delays(pid: int) -> dict[int, int]:
    """Nanoseconds each thread of ``pid`` has spent runnable but not running; {} if unknown."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    delays = {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                delays[int(tid)] = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return delays


class Clock:
    """Seconds of a limit used by the processes it watches: wall time not spent starved."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.started = self._last = time.monotonic()
        self.elapsed = 0.0  # the limit's seconds used
        self._seen: dict[int, dict[int, int]] = {}  # pid -> tid -> run delay (ns)

    @property
    def wall(self) -> float:
        return time.monotonic() - self.started

    @property
    def starved(self) -> float:
        """Wall seconds not counted: the time the watched processes waited for a CPU."""
        return max(0.0, self.wall - self.elapsed)

    def tick(self, pids: Iterable[int]) -> float:
        """Advance by the wall time since the last tick, less the starvation of ``pids``."""
        now = time.monotonic()
        step, self._last = now - self._last, now
        waited = 0.0
        for pid in pids:
            if pid is None:
                continue
            delays = run_delays(pid)
            before = self._seen.get(pid)
            self._seen[pid] = delays
            if before is None or not delays:  # its first look: the baseline
                continue
            worst = max((ns - before.get(tid, 0) for tid, ns in delays.items()), default=0)
            waited = max(waited, worst / 1e9)
        self.elapsed += max(0.0, step - min(waited, step))
        return self.elapsed

    def restart(self) -> None:
        """Count the limit afresh from now (a sign of life), keeping the baselines."""
        self.started = self._last = time.monotonic()
        self.elapsed = 0.0

    def expired(self) -> bool:
        return self.elapsed >= self.limit or self.wall >= self.limit * STRETCH

    def left(self) -> float:
        """Wall seconds to wait before looking again: never past the limit at wall speed."""
        return max(0.0, min(TICK, self.limit - self.elapsed))

    def note(self) -> str:
        """How the limit was counted, when load stretched it (for a timeout's message)."""
        if self.starved < 1.0:
            return ""
        return (
            f"{self.wall:.0f} s of wall time, {self.starved:.0f} s of it waiting for a CPU "
            f"on a loaded host, not counted"
        )


def wait_for(cond: threading.Condition, predicate: Callable[[], object], limit: float) -> bool:
    """``cond.wait_for(predicate, limit)`` with the limit counted on this process's clock:
    a collective whose peer thread computes on a loaded host waits for it, not a hang."""
    clock = Clock(limit)
    pid = os.getpid()
    while not predicate():
        if clock.expired():
            return False
        cond.wait(clock.left())
        clock.tick([pid])
    return True
