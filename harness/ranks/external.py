"""External mode: this process is already one rank of torchrun or Slurm.

Nothing is spawned. Every rank runs the same pytest session; a test body runs
here, on this rank only, against the process group of its
:class:`~harness.ranks.session.Session`. After each test the ranks agree on its
outcome through the launcher's store, so one rank's skip is a skip everywhere,
one rank's failure fails the test on every rank with that rank's traceback, and
no rank starts the next test while another is still in this one. The bases run
their tests through :func:`run_test` (this mode's runner) when :func:`launched`
says a launcher made this process a rank.
"""

from __future__ import annotations

import os
import time
import traceback
import unittest
from typing import Any

from harness.outcomes import TestStatus, skip_reason_for_exit_code
from harness.ranks.launch import Launch, detect
from harness.ranks.outcome import RankOutcome, Verdict, verdict
from harness.ranks.runner import Job
from harness.ranks.session import Session, lost_after
from harness.ranks.watchdog import Watchdog


def accelerator_budget(host_count: int) -> int | None:
    """Accelerators the job grants a test: the whole world when each rank has its own.

    For :func:`harness.skips.accelerator_budget`, which counts one host's devices;
    None outside a launcher.
    """
    launch = launched()
    if launch is None:
        return None
    return launch.world_size if host_count >= launch.local_world_size else host_count


_SESSION: Session | None = None
_CHECKED = False


def launched() -> Launch | None:
    """This process's launch (cached), or None when no launcher made it a rank."""
    global _CHECKED, _LAUNCH
    if not _CHECKED:
        _LAUNCH, _CHECKED = detect(), True
    return _LAUNCH


_LAUNCH: Launch | None = None


def session() -> Session:
    global _SESSION
    if _SESSION is None:
        launch = launched()
        if launch is None:
            raise RuntimeError("external mode outside a launcher: no torchrun or Slurm rank here")
        _SESSION = Session(launch)
    return _SESSION


def current_session() -> Session | None:
    return _SESSION


# -- the bases' entry ----------------------------------------------------------
def run_test(job: Job) -> Verdict:
    """Run the job's test on this rank and agree on its verdict with the other ranks.

    Every rank takes part in every test, even one the parent found a requirement
    skip for (``job.skip``): the ranks stay in step and agree on the skip.
    """
    __tracebackhide__ = True
    test, method, timeout = job.test, job.method, job.timeout
    s = session()
    launch = s.launch
    name = job.name
    if s.lost:
        return Verdict(TestStatus.SKIPPED, f"not run: {s.stop_message()}")
    started = time.monotonic()
    world = job.world_size
    reason = job.skip
    if reason is None and world != launch.world_size:
        reason = (
            f"needs world size {world}; under {launch.launcher} every test runs on all "
            f"{launch.world_size} ranks"
        )
    try:
        s.ensure_group()  # before any per-rank decision: every rank takes part
    except Exception as exc:
        s.drop_group()
        mine = _failed(launch.rank, exc, note="making the process group failed")
    else:
        if reason is not None:
            mine = RankOutcome(launch.rank, "skipped", reason=reason)
        else:
            mine = _run_body(test, method, s, timeout)
    mine.seconds = time.monotonic() - started
    outcomes = s.agree(f"{type(test).__module__}.{name}", mine, limit=timeout + lost_after())
    if any(o.status != "passed" for o in outcomes) and not s.lost:
        s.generation += 1  # every rank saw the same outcomes, so every rank rebuilds
    return verdict(
        outcomes,
        world_size=launch.world_size,
        test_name=name,
        timeout=timeout,
        timed_out=any(o.status == "hung" for o in outcomes),
        rerun=rerun_command(job.rerun),
    )


def _run_body(test: Any, method: str, s: Session, timeout: float) -> RankOutcome:
    rank = s.launch.rank
    test.rank = rank
    # The group belongs to the session: with_comms must neither make nor destroy it,
    # but after an error it leaves the group so peers in a collective fail fast.
    shadows = {
        "init_pg": lambda *a, **k: None,
        "destroy_pg": lambda *a, **k: None,
        "_pg_after_error": s.leave_collectives,
    }
    vars(test).update(shadows)
    test._harness_direct = True
    name = f"{type(test).__qualname__}.{method}"
    watchdog = Watchdog(s, name, timeout, key=f"{type(test).__module__}.{name}")
    mine = RankOutcome(rank, "passed")
    try:
        getattr(test, method)()
    except unittest.SkipTest as exc:
        s.leave_collectives()
        mine = RankOutcome(rank, "skipped", reason=str(exc))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        s.leave_collectives()  # peers waiting in a collective for this rank fail now
        skip = skip_reason_for_exit_code(exc.code) if isinstance(exc, SystemExit) else None
        if skip is not None:
            mine = RankOutcome(rank, "skipped", reason=skip)
        else:
            mine = _failed(rank, exc, assertion=isinstance(exc, test.failureException))
    finally:
        watchdog.cancel()
        test._harness_direct = False
        for key in shadows:
            vars(test).pop(key, None)
    if watchdog.fired and mine.status != "skipped":
        return RankOutcome(rank, "hung", stack=watchdog.stack, order=time.time())
    outcome = getattr(test, "_outcome", None)
    if mine.status == "passed" and outcome is not None and not getattr(outcome, "success", True):
        mine = RankOutcome(
            rank, "failed", texts=[f"SubTestFailure: a subTest failed on rank {rank}"]
        )
        mine.order = time.time()
    return mine


def _failed(rank: int, exc: BaseException, assertion: bool = False, note: str = "") -> RankOutcome:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return RankOutcome(
        rank,
        "failed",
        texts=[f"{note}\n{text}" if note else text],
        assertion=assertion,
        order=getattr(exc, "_harness_failed_at", None) or time.time(),
    )


def rerun_command(local: str) -> str:
    """The launch command that reruns one test: ``harness run`` sets its prefix."""
    target = local.removeprefix("pytest ").strip()
    prefix = os.environ.get("HARNESS_RERUN", "").strip()
    if prefix:
        return f"{prefix} -- {target}   (on every node)"
    return f"torchrun <your launch flags> -m harness.ranks.external_main {target}"
