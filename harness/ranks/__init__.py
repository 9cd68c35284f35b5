"""Running a test on its ranks: processes, a pool, threads, or a launcher's ranks.

The floor below the test bases: nothing here imports ``harness.bases``,
``harness.skips``, the pytest plugin or a command. The bases decide a test's
timeout, rerun line and requirement skip and hand it down as a :class:`Job`;
each mode's runner (``runner(job) -> Verdict``, :mod:`~harness.ranks.runner`)
runs it.

One job per module: ``runner`` (the interface), ``run`` (process and pool
modes) on ``group`` (one set of rank processes seen from the parent), ``spawn``
(the fork server) and ``worker`` (what runs in a rank), ``threads`` (threads
mode) on ``threaded_pg`` (a process group of threads), ``external`` (a
launcher's ranks) on ``launch``/``session``/``watchdog``, ``outcome`` (ranks'
reports -> one verdict and message), ``reaper`` (the last sweep at exit).

Names are imported on first use, so ``harness.ranks.launch`` (which the CLI
reads) does not load the runner.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "Job": "harness.ranks.runner",
    "Runner": "harness.ranks.runner",
    "RankGroup": "harness.ranks.group",
    "RankAssertionError": "harness.ranks.outcome",
    "RankError": "harness.ranks.outcome",
    "RankFailure": "harness.ranks.outcome",
    "RankOutcome": "harness.ranks.outcome",
    "Verdict": "harness.ranks.outcome",
    "Pool": "harness.ranks.run",
    "close_all_pools": "harness.ranks.run",
    "close_pool": "harness.ranks.run",
    "pg_timeout_for": "harness.ranks.group",
    "pool_for": "harness.ranks.run",
    "run_in_pool": "harness.ranks.run",
    "run_in_processes": "harness.ranks.run",
    "run_in_threads": "harness.ranks.threads",
    "current_rank": "harness.ranks.worker",
    "current_spec": "harness.ranks.worker",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.ranks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
