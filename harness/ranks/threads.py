"""Threads mode: one test's ranks are threads of the test process.

The rank side is the same as in a process (:func:`~harness.ranks.worker.run_one`:
setUp, the test, tearDown, subtests) and so is the verdict; only the ranks'
home differs. A thread cannot be killed: at the timeout the run is aborted, so
ranks waiting in a collective fail at once; one still running after a short
grace is reported as hung with its stack, and left behind as a daemon thread.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

from harness.ranks import last_words, worker
from harness.ranks.clock import Clock
from harness.ranks.outcome import RankOutcome, Verdict, verdict
from harness.ranks.run import pg_timeout_for
from harness.ranks.runner import Job

# How long ranks get to unwind after an abort before they count as hung.
ABORT_GRACE_S = 2.0
_RUNS = itertools.count()


def _spec(
    cls: type, rank: int, world_size: int, workdir: str, pg_timeout: float
) -> worker.RankSpec:
    return worker.RankSpec(
        module=cls.__module__,
        file=None,
        qualname=cls.__qualname__,
        rank=rank,
        world_size=world_size,
        workdir=workdir,
        env={},
        pool=False,
        pg_timeout=pg_timeout,
    )


class RankExit(BaseException):
    """A rank thread ended its "process": ``os._exit(code)``, or a signal that would
    kill the process sent to itself. That rank crashed, not the process; ``code``
    is the process's exit code (negative: the signal, as subprocess gives it)."""

    def __init__(self, code: int, how: str) -> None:
        super().__init__(f"{how} on a rank thread [exit code {code}]")
        self.code = code


# Signals whose default action does not end the process (signal(7)); a rank thread
# sending itself any other (SIGKILL, SIGSEGV, SIGABRT, SIGTERM, ...) while it has
# no handler would end every rank and pytest, with no verdict at all.
_NOT_FATAL = {
    "SIGCHLD",
    "SIGCONT",
    "SIGURG",
    "SIGWINCH",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
}


def _fatal(sig: int) -> str | None:
    """The signal's name when delivering it would end this process, else None."""
    try:
        sig = signal.Signals(sig)
    except ValueError:
        return None
    if sig.name in _NOT_FATAL or signal.getsignal(sig) != signal.SIG_DFL:
        return None
    return sig.name


def _on_rank(target_is_self: bool, sig: int, how: str) -> None:
    """On a rank thread, a fatal signal to itself ends that rank instead (RankExit)."""
    name = _fatal(sig) if target_is_self and worker.current_rank() is not None else None
    if name is not None:
        raise RankExit(-signal.Signals(sig), how.format(name))


_REAL = {
    (os, "_exit"): os._exit,
    (os, "abort"): os.abort,
    (os, "kill"): os.kill,
    (signal, "raise_signal"): signal.raise_signal,
    (signal, "pthread_kill"): signal.pthread_kill,
}


def _exit(code: int) -> None:
    """os._exit during a threads run: on a rank thread it ends that rank (as it would
    end a rank process), so the verdict names the rank and its code; elsewhere it
    ends the process as always."""
    if worker.current_rank() is not None:
        raise RankExit(code, f"os._exit({code})")
    _REAL[os, "_exit"](code)


def _abort() -> None:
    _on_rank(True, signal.SIGABRT, "os.abort() ({})")
    _REAL[os, "abort"]()


def _kill(pid: int, sig: int) -> None:
    _on_rank(pid == os.getpid(), sig, "os.kill(os.getpid(), {})")
    _REAL[os, "kill"](pid, sig)


def _raise_signal(sig: int) -> None:
    _on_rank(True, sig, "signal.raise_signal({})")
    _REAL[signal, "raise_signal"](sig)


def _pthread_kill(thread_id: int, sig: int) -> None:
    _on_rank(thread_id == threading.get_ident(), sig, "signal.pthread_kill(<own thread>, {})")
    _REAL[signal, "pthread_kill"](thread_id, sig)


_STAND_INS = {
    (os, "_exit"): _exit,
    (os, "abort"): _abort,
    (os, "kill"): _kill,
    (signal, "raise_signal"): _raise_signal,
    (signal, "pthread_kill"): _pthread_kill,
}


@contextlib.contextmanager
def _exits_end_ranks() -> Iterator[None]:
    """While rank threads run, what would end a rank process ends only that rank."""
    for (module, name), stand_in in _STAND_INS.items():
        setattr(module, name, stand_in)
    try:
        yield
    finally:
        for (module, name), real in _REAL.items():
            setattr(module, name, real)


def _thread_locals(cls: type) -> list[tuple[threading.local, dict[str, Any]]]:
    """The class's ``threading.local`` attributes as this thread sees them.

    A test class may keep per-thread state set at import (PyTorch's device-type
    bases hold their precision in a class-level ``threading.local``); a rank thread
    starts with it empty, so each rank thread gets the importing thread's values.
    """
    found = {}
    for klass in cls.__mro__:
        for value in vars(klass).values():
            if isinstance(value, threading.local) and id(value) not in found:
                found[id(value)] = (value, dict(vars(value)))
    return list(found.values())


def _rank_body(
    cls: type,
    method: str,
    spec: worker.RankSpec,
    run: Any,
    results: dict,
    inherited: list[tuple[threading.local, dict[str, Any]]] = (),
) -> None:
    from harness.ranks import threaded_pg

    for local, values in inherited:
        for name, value in values.items():
            setattr(local, name, value)
    last_words.rank_thread(spec.rank)
    with run.rank_thread(), worker.as_rank(spec):
        try:
            cls._harness_init_thread_rank(spec)
            threaded_pg.init_rank(run, spec.rank, spec.pg_timeout)
        except BaseException:  # noqa: BLE001 (reported, like a process rank that broke)
            results[spec.rank] = {"status": "broken", "texts": [traceback.format_exc()]}
            run.finish(spec.rank, "broken")
            return
        outcome = worker.run_one(cls, method, spec)
        code = _exit_code(outcome)
        if code is not None:
            outcome = {"status": "crashed", "exitcode": code}
        results[spec.rank] = outcome
        run.finish(spec.rank, outcome["status"])


def _exit_code(outcome: dict) -> int | None:
    """The exit code of a RankExit the rank raised, found in its report's traceback."""
    for text in outcome.get("texts", ()):
        last = text.rstrip().splitlines()[-1] if text.strip() else ""
        found = _EXIT_LINE.match(last)
        if found:
            return int(found.group(1))
    return None


_EXIT_LINE = re.compile(rf"{re.escape(__name__)}\.RankExit: .* \[exit code (-?\d+)\]$")


def _stack_of(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident or -1)
    return "".join(traceback.format_stack(frame)) if frame is not None else ""


def run_in_threads(job: Job) -> Verdict:
    """Threads mode: one thread per rank of this process, on a threaded process group."""
    from harness.ranks import threaded_pg

    cls, method, world_size, timeout = job.cls, job.method, job.world_size, job.timeout
    test_name, rerun = job.name, job.rerun
    pg_timeout = pg_timeout_for(timeout)
    run = threaded_pg.ThreadRun(world_size, pg_timeout)
    workdir = os.path.join(tempfile.gettempdir(), f"harness-threads-{os.getpid()}-{next(_RUNS)}")
    results: dict[int, dict[str, Any]] = {}
    inherited = _thread_locals(cls)
    threads = [
        threading.Thread(
            target=_rank_body,
            args=(
                cls,
                method,
                _spec(cls, rank, world_size, workdir, pg_timeout),
                run,
                results,
                inherited,
            ),
            name=f"{test_name} rank {rank}",
            daemon=True,
        )
        for rank in range(world_size)
    ]
    classname = f"{cls.__module__}.{cls.__qualname__}"
    with (
        threaded_pg.threaded_world(),
        _exits_end_ranks(),
        last_words.watching(test_name, classname, method, rerun),
    ):
        clock = Clock(timeout)  # the rank threads' time not spent waiting for a CPU
        for t in threads:
            t.start()
        alive = threads
        while alive and not clock.expired():
            alive[0].join(clock.left())
            clock.tick([os.getpid()])
            alive = [t for t in alive if t.is_alive()]
        timed_out = bool(alive)
        if timed_out:
            note = clock.note()
            run.abort(
                f"the test ran past its {timeout:g} s timeout" + (f" ({note})" if note else "")
            )
            grace = time.monotonic() + ABORT_GRACE_S
            for t in threads:
                t.join(max(0.0, grace - time.monotonic()))
    outcomes = []
    for rank, t in enumerate(threads):
        msg = results.get(rank)
        if msg is None or t.is_alive():
            outcomes.append(
                RankOutcome(rank, "hung" if timed_out else "crashed", stack=_stack_of(t))
            )
            continue
        if msg["status"] == "crashed":
            outcomes.append(RankOutcome(rank, "crashed", exitcode=msg["exitcode"]))
            continue
        outcomes.append(RankOutcome.from_report({**msg, "rank": rank}))
    return verdict(
        outcomes,
        world_size=world_size,
        test_name=test_name,
        timeout=timeout,
        timed_out=timed_out,
        rerun=rerun,
        clock_note=clock.note() if timed_out else "",
    )
