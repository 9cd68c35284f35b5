"""Whether a process is still there (imported by name: tests/ is on sys.path)."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True while ``pid`` exists (a zombie counts: its parent has not reaped it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
