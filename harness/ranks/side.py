"""The side lane: a run's LocalTensor tests, run beside pytest in processes of their own.

A LocalTensor test simulates every rank in one process, so it keeps one core busy,
and pytest runs one test after another: a file's LocalTensor tests wait for its rank
tests, and while they run the other cores idle. At the start of the run the lane
forks workers from the ranks' fork server (torch and the test module already
imported, their pages shared) and they run the session's LocalTensor tests from the
last one back, while pytest goes from the first one forward. When pytest reaches a
test the lane has not started, it runs it itself as before; one the lane has run or
is running, it takes the outcome of (output, skip, failure and its traceback). The
two meet in the middle, no test runs twice, and the order pytest reports in is
unchanged.

A worker runs a test with plain unittest machinery, as a rank does, so a test the
lane takes must not need what only pytest gives: the plugin's planner
(:func:`harness.lanes.side_tasks`) leaves out tests with fixtures of their own,
class or module set-up, or a skip decided in pytest. A worker that crashes or hangs
is replaced, and the test fails with its exit or its stack, as a rank's would.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import traceback
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness.outcomes import RankStatus
from harness.ranks import spawn, worker
from harness.ranks.group import RankGroup, class_ref, pg_timeout_for
from harness.ranks.outcome import RankOutcome, cause, exit_description

#: Set HARNESS_SIDE_WORKERS=0 (or --harness-side-workers 0) to run every LocalTensor
#: test in pytest's own process; named in every failure the lane reports.
WORKERS_ENV = "HARNESS_SIDE_WORKERS"


@dataclass(frozen=True)
class Task:
    """One LocalTensor test the lane may run: its class, method and time limit."""

    cls: type
    method: str
    timeout: float

    @property
    def key(self) -> tuple[type, str]:
        return (self.cls, self.method)

    @property
    def name(self) -> str:
        return f"{self.cls.__qualname__}.{self.method}"


class SideFailure(Exception):
    """A test the side lane ran failed there."""


class SideAssertionError(SideFailure, AssertionError):
    """It failed an assertion: unittest counts it a failure (and honours expectedFailure)."""


class SideError(SideFailure, RuntimeError):
    """It raised, or its worker crashed or hung: unittest counts it an error."""


@dataclass
class Done:
    """What the lane saw of one test: its outcome and what it printed."""

    outcome: RankOutcome
    output: str = ""
    timeout: float = 0.0
    clock_note: str = ""

    def raise_if_not_passed(self, name: str, rerun: str) -> None:
        """Pass, or raise what the test's own process would have: a skip or a failure."""
        __tracebackhide__ = True
        import unittest

        o = self.outcome
        if o.status == "passed":
            return
        if o.status == "skipped":
            raise unittest.SkipTest(o.reason)
        where = (
            "(run beside the rank tests in the kit's side process; "
            f"{WORKERS_ENV}=0 runs LocalTensor tests in pytest's own)"
        )
        if o.status == "failed":
            head = f"{name} failed: {cause(o.texts[-1]) if o.texts else 'no traceback'}"
            body = "\n".join(text.rstrip() for text in o.texts)
        elif o.status == "crashed":
            head = f"{name}: its side process {exit_description(o.exitcode)}"
            body = o.stack.rstrip() or "(no stack)"
        else:  # hung or stopped
            note = f" ({self.clock_note})" if self.clock_note else ""
            head = f"{name} timed out after {self.timeout:g} s{note}"
            body = "--- stack at the timeout ---\n" + (o.stack.rstrip() or "(no stack)")
        message = f"{head}\n{where}\n\n{body}\n\nRerun just this test: {rerun}"
        error = SideAssertionError if o.status == "failed" and o.assertion else SideError
        raise error(message)


def side_main(spec: worker.RankSpec, conn: Any) -> None:
    """Entry point of a side worker (forked from the fork server): run each test it is
    sent, in this process, until told to stop. It plays no rank (``current_rank()`` is
    None), so a kit test dispatches here exactly as it would in pytest's process."""
    stacks = worker.become_child(spec)
    try:
        worker.load_torch()
    except BaseException:
        conn.send({"status": "broken", "texts": [traceback.format_exc()]})
        worker.exit_now(conn, stacks, 0)
        return
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            break
        if task is None:
            break
        module, file, qualname, method = task
        try:
            cls = worker.resolve_class(module, file, qualname)
        except BaseException:
            conn.send({"status": "broken", "texts": [traceback.format_exc()]})
            continue
        with warnings.catch_warnings(record=True) as caught:
            # as pytest does around a test; its own filters apply again where they are replayed
            for category in (DeprecationWarning, PendingDeprecationWarning):
                warnings.filterwarnings("always", category=category)
            report = worker.run_case(cls, method)
        report["warnings"] = [_warning_record(w) for w in caught]
        conn.send(report)
    worker.exit_now(conn, stacks, 0)


def _warning_record(w: warnings.WarningMessage) -> tuple[str, str, str, str, int]:
    category = w.category
    return (category.__module__, category.__qualname__, str(w.message), w.filename, w.lineno)


def _warning_category(module: str, qualname: str) -> type[Warning]:
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return UserWarning
    return found if isinstance(found, type) and issubclass(found, Warning) else UserWarning


class Lane:
    """The tests the side lane may run, and the workers that run them from the back."""

    def __init__(self, tasks: Iterable[Task], workers: int) -> None:
        self._cond = threading.Condition()
        # A dict keeps pytest's order; popitem() takes the last test first.
        self._pending: dict[tuple[type, str], Task] = {t.key: t for t in tasks}
        self._running: set[tuple[type, str]] = set()
        self._done: dict[tuple[type, str], Done] = {}
        self._groups: set[RankGroup] = set()
        self._closed = False
        # the run's environment before any test: not one a test or fixture set for itself
        self._env = dict(os.environ)
        self.ran = 0  # tests whose outcome pytest took from the lane
        #: seconds each taken test ran in its worker, until its report is made
        self.seconds: dict[tuple[type, str], float] = {}
        self._threads = [
            threading.Thread(target=self._work, name=f"harness side lane {i}", daemon=True)
            for i in range(max(0, workers) if self._pending else 0)
        ]

    def start(self) -> Lane:
        for thread in self._threads:
            thread.start()
        return self

    def take(self, cls: type, method: str) -> Done | None:
        """The lane's outcome of ``cls.method`` (waiting for it if it runs now), or None:
        the lane never had it, or has not started it, and the caller runs it itself."""
        key = (cls, method)
        with self._cond:
            if self._pending.pop(key, None) is not None:
                return None
            if key not in self._running and key not in self._done:
                return None
            while key not in self._done:
                self._cond.wait()
            done = self._done.pop(key)
        if done.outcome.status == "broken":  # the worker could not load it: run it here
            return None
        self.ran += 1
        self.seconds[key] = done.outcome.seconds
        return done

    def close(self) -> None:
        """Stop: nothing more is started, running workers are killed, threads joined."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            groups = list(self._groups)
        for group in groups:
            group.kill()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=10.0)

    def _next(self) -> Task | None:
        with self._cond:
            if self._closed or not self._pending:
                return None
            _, task = self._pending.popitem()
            self._running.add(task.key)
            return task

    def _finish(self, task: Task, done: Done) -> None:
        with self._cond:
            self._running.discard(task.key)
            self._done[task.key] = done
            self._cond.notify_all()

    def _work(self) -> None:
        group: RankGroup | None = None
        task: Task | None = None
        try:
            while (task := self._next()) is not None:
                if group is None or group.dead:
                    group = self._new_group(group, task)
                self._finish(task, self._run(group, task))
                task = None
        except BaseException:  # never leave pytest waiting for a test nobody runs
            if task is not None:
                text = f"the side lane failed:\n{traceback.format_exc()}"
                self._finish(task, Done(RankOutcome(0, "broken", texts=[text])))
        finally:
            if group is not None:
                self._retire(group)

    def _new_group(self, old: RankGroup | None, task: Task) -> RankGroup:
        if old is not None:
            self._retire(old)
        group = RankGroup(
            task.cls,
            1,
            pool=True,
            pg_timeout=pg_timeout_for(task.timeout),
            target=side_main,
            env=self._env,
        )
        with self._cond:
            self._groups.add(group)
        return group

    def _retire(self, group: RankGroup) -> None:
        with self._cond:
            self._groups.discard(group)
        group.stop(timeout=5.0)

    @staticmethod
    def _run(group: RankGroup, task: Task) -> Done:
        module, file, qualname = class_ref(task.cls)
        try:
            group.send((module, file, qualname, task.method))
        except (BrokenPipeError, OSError):
            proc = group.procs[0]
            outcome = RankOutcome(0, RankStatus("crashed"), exitcode=proc.exitcode)
            return Done(outcome, group.new_output(0), task.timeout)
        outcomes, timed_out = group.collect(task.timeout)
        note = group.clock.note() if timed_out and group.clock is not None else ""
        return Done(outcomes[0], group.new_output(0), task.timeout, note)


_LANE: Lane | None = None


def start(tasks: list[Task], workers: int, test_module: str | None = None) -> Lane | None:
    """Start the run's lane (once): the fork server first, from this (the main) thread."""
    global _LANE
    if _LANE is not None or workers <= 0 or len(tasks) < 2:  # one: pytest is there first
        return _LANE
    spawn.context(test_module or tasks[-1].cls.__module__)
    _LANE = Lane(tasks, workers).start()
    return _LANE


def take(cls: type, method: str) -> Done | None:
    """The lane's outcome for this test, or None: run it here (also in a side worker)."""
    return _LANE.take(cls, method) if _LANE is not None else None


def seconds_taken(cls: type | None, method: str) -> float | None:
    """How long a test whose outcome came from the lane ran in its worker (asked once,
    for its report); None for any other test."""
    return _LANE.seconds.pop((cls, method), None) if _LANE is not None else None


def stop() -> int:
    """End the run's lane; how many outcomes pytest took from it."""
    global _LANE
    lane, _LANE = _LANE, None
    if lane is None:
        return 0
    lane.close()
    return lane.ran


def replay(done: Done) -> None:
    """What the test printed and warned in the worker, printed and warned here, in the
    test's call, where pytest captures both and its warning filters apply."""
    if done.output:
        sys.stdout.write(done.output)
        sys.stdout.flush()
    for module, qualname, message, filename, lineno in done.outcome.warnings:
        warnings.warn_explicit(message, _warning_category(module, qualname), filename, lineno)
