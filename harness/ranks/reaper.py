"""No rank outlives its test run: a last sweep at interpreter exit.

Groups kill their own ranks when a test ends (also on Ctrl-C, since the wait
is in a ``finally``); this registry catches what escapes that -- a class whose
teardown never ran under ``pytest -x``, an exception between spawn and wait.
Ranks also ask the kernel to kill them when the fork server dies
(PR_SET_PDEATHSIG), and the fork server exits when this process does.
"""

from __future__ import annotations

import atexit
import weakref
from typing import Any

_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()


def register(group: Any) -> None:
    _LIVE.add(group)


def unregister(group: Any) -> None:
    _LIVE.discard(group)


def kill_all() -> None:
    for group in list(_LIVE):
        try:
            group.kill()
        except Exception:
            pass


atexit.register(kill_all)
