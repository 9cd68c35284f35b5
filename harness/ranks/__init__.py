"""Spawning ranks: per-test processes, per-class pools, outcomes and reaping.

Layout, one job per module: ``spawn`` (the fork server), ``worker`` (what runs
in a rank), ``group`` (one set of ranks seen from the parent), ``outcome``
(ranks' reports -> one verdict and message), ``run`` (process and pool modes),
``threads`` (threads mode) on ``threaded_pg`` (a process group of threads),
``reaper`` (the last sweep at exit). Nothing here knows about test bases.
"""

from harness.ranks.group import RankGroup
from harness.ranks.outcome import RankAssertionError, RankError, RankFailure, RankOutcome, Verdict
from harness.ranks.run import (
    Pool,
    close_all_pools,
    close_pool,
    pg_timeout_for,
    pool_for,
    run_in_processes,
)
from harness.ranks.threads import run_in_threads
from harness.ranks.worker import current_rank, current_spec

__all__ = [
    "Pool",
    "RankAssertionError",
    "RankError",
    "RankFailure",
    "RankGroup",
    "RankOutcome",
    "Verdict",
    "close_all_pools",
    "close_pool",
    "current_rank",
    "current_spec",
    "pg_timeout_for",
    "pool_for",
    "run_in_processes",
    "run_in_threads",
]
