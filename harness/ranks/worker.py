"""The rank side: what runs inside each rank process.

A rank is forked from a server that already imported torch, so it starts in
milliseconds. It runs tests it is sent with plain ``unittest`` machinery
(setUp, the test, tearDown, subTest, cleanups) and reports each outcome to
the parent over its pipe; its output goes to a per-rank log, and SIGUSR1 (or a
fatal signal) writes every thread's Python stack to a per-rank file.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import importlib.util
import os
import signal
import sys
import threading
import time
import traceback
import unittest
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from harness import lifelines
from harness.outcomes import skip_reason_for_exit_code
from harness.ranks import spawn


@dataclass
class RankSpec:
    """Everything a rank needs, sent once when it starts."""

    module: str
    file: str | None
    qualname: str
    rank: int
    world_size: int
    workdir: str
    env: dict[str, str]
    pool: bool
    pg_timeout: float
    first_test: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def store_path(self) -> str:
        return os.path.join(self.workdir, "store")


def log_path(workdir: str, rank: int) -> str:
    return os.path.join(workdir, f"rank{rank}.log")


def stack_path(workdir: str, rank: int) -> str:
    return os.path.join(workdir, f"rank{rank}.stack")


# (rank, world_size, spec) inside a rank process; None in the parent. A rank
# thread (threads mode) has its own, in _THREAD.
_CURRENT: tuple[int, int, RankSpec] | None = None
_THREAD = threading.local()


def _current() -> tuple[int, int, RankSpec] | None:
    return getattr(_THREAD, "current", None) or _CURRENT


def current_rank() -> int | None:
    current = _current()
    return None if current is None else current[0]


def current_spec() -> RankSpec | None:
    current = _current()
    return None if current is None else current[2]


@contextlib.contextmanager
def as_rank(spec: RankSpec) -> Iterator[None]:
    """The calling thread is rank ``spec.rank`` until the block ends (threads mode)."""
    _THREAD.current = (spec.rank, spec.world_size, spec)
    try:
        yield
    finally:
        _THREAD.current = None


def output_to(path: str) -> None:
    """This process's stdout and stderr (the fds too: native code's output) appended to
    ``path``, a line at a time, so a process that dies leaves its last words there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # Forked from a pytest run, sys.stdout may still be its capture: write to the fds.
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError):
            pass


def redirect_output(workdir: str, rank: int):
    output_to(log_path(workdir, rank))
    stacks = open(stack_path(workdir, rank), "w")  # noqa: SIM115 (lives as long as the rank)
    faulthandler.enable(file=stacks, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True, chain=False)
    return stacks


def resolve_class(module: str, file: str | None, qualname: str) -> type:
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            if not file:
                raise
            spec = importlib.util.spec_from_file_location(module, file)
            if spec is None or spec.loader is None:
                raise
            mod = importlib.util.module_from_spec(spec)
            sys.modules[module] = mod
            spec.loader.exec_module(mod)
    obj: Any = mod
    for part in qualname.split("."):
        if part == "<locals>":
            raise RuntimeError(
                f"test class {module}.{qualname} is defined inside a function; rank processes "
                "import test classes by name, so define it at module level"
            )
        obj = getattr(obj, part)
    return obj


class _RankResult(unittest.TestResult):
    """Collects one test's outcome on this rank, for the parent to merge."""

    def __init__(self) -> None:
        super().__init__()
        self.status = "passed"
        self.reason = ""
        self.texts: list[str] = []
        self.assertion = True
        self.failed_at: float | None = None

    def _fail(self, test, err, assertion: bool = False) -> None:
        exc = err[1]
        if isinstance(exc, SystemExit):
            reason = skip_reason_for_exit_code(exc.code)
            if reason is not None:
                self.addSkip(test, reason)
                return
        if self.status != "skipped":
            self.status = "failed"
        if self.failed_at is None:
            self.failed_at = getattr(exc, "_harness_failed_at", None) or time.time()
        self.assertion = self.assertion and assertion
        self.texts.append(self._exc_info_to_string(err, test))

    def addError(self, test, err):  # noqa: N802
        self._fail(test, err)

    def addFailure(self, test, err):  # noqa: N802
        self._fail(test, err, assertion=True)

    def addSkip(self, test, reason):  # noqa: N802
        self.status = "skipped"
        self.reason = str(reason)

    def addSubTest(self, test, subtest, err):  # noqa: N802
        if err is not None:
            if self.status != "skipped":
                self.status = "failed"
            self.assertion = self.assertion and issubclass(err[0], test.failureException)
            self.texts.append(f"{subtest.id()}\n{self._exc_info_to_string(err, test)}")

    def addExpectedFailure(self, test, err):  # noqa: N802
        # The parent's unittest decides "expected failure"; it needs to see the failure.
        self._fail(test, err, assertion=True)

    def addUnexpectedSuccess(self, test):  # noqa: N802
        pass


def run_one(cls: type, method: str, spec: RankSpec) -> dict[str, Any]:
    """Run ``cls.method`` as this rank; the outcome as the parent reads it."""

    def prepare(test: unittest.TestCase) -> None:
        test.file_name = spec.store_path
        test.rank = spec.rank

    return {"rank": spec.rank, **run_case(cls, method, prepare)}


def run_case(cls: type, method: str, prepare: Any = None) -> dict[str, Any]:
    """Run one test with plain unittest machinery (setUp, the test, tearDown, subTest,
    cleanups): its status, skip reason, tracebacks and seconds."""
    started = time.monotonic()
    result = _RankResult()
    try:
        test = cls(method)
        if prepare is not None:
            prepare(test)
        test.run(result)
    except BaseException as exc:  # a broken __init__ or run(): still an outcome
        if isinstance(exc, KeyboardInterrupt):
            raise
        result.status = "failed"
        result.assertion = False
        result.texts.append(traceback.format_exc())
    sys.stdout.flush()
    sys.stderr.flush()
    return {
        "status": result.status,
        "reason": result.reason,
        "texts": result.texts,
        "assertion": result.assertion,
        "failed_at": result.failed_at,
        "seconds": time.monotonic() - started,
    }


def become_child(spec: RankSpec, **env: str) -> Any:
    """What a process forked for the run does first: end with the run, take the run's
    environment (and ``env``), and send its output and stacks to the group's files;
    returns the stack file."""
    lifelines.die_with_parent()  # the fork server (so the test run) gone, the child goes
    spawn.forget_server_liveness()  # the run's death must reach the server (issue 16)
    os.environ.clear()
    os.environ.update(spec.env)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    return redirect_output(spec.workdir, spec.rank)


def load_torch() -> None:
    """torch on the child's threads, and the cell's plugins: before the test module, as
    in the parent (a device a plugin adds)."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    from harness import hosts

    hosts.import_plugins()


def rank_main(spec: RankSpec, conn) -> None:
    """Entry point of a rank process (forked from the fork server)."""
    global _CURRENT
    rank, size = str(spec.rank), str(spec.world_size)
    stacks = become_child(spec, RANK=rank, LOCAL_RANK=rank, WORLD_SIZE=size)
    _CURRENT = (spec.rank, spec.world_size, spec)
    try:
        load_torch()
        cls = resolve_class(spec.module, spec.file, spec.qualname)
        variant = spec.extra.get("variant")  # "module:function", e.g. fake mode's
        if variant:
            module, _, name = variant.partition(":")
            cls = getattr(importlib.import_module(module), name)(cls)
    except BaseException:
        conn.send({"rank": spec.rank, "status": "broken", "texts": [traceback.format_exc()]})
        exit_now(conn, stacks, 0)
        return

    init_skip = None
    if spec.pool:
        try:
            cls._harness_init_rank(spec)
        except unittest.SkipTest as exc:
            init_skip = str(exc)
        except SystemExit as exc:
            init_skip = skip_reason_for_exit_code(exc.code)
            if init_skip is None:
                conn.send(
                    {"rank": spec.rank, "status": "broken", "texts": [traceback.format_exc()]}
                )
                exit_now(conn, stacks, 0)
                return
        except BaseException:
            conn.send({"rank": spec.rank, "status": "broken", "texts": [traceback.format_exc()]})
            exit_now(conn, stacks, 0)
            return
        conn.send({"rank": spec.rank, "status": "ready"})

    clean = True
    task = spec.first_test
    while True:
        if task is None:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                break
            if task is None:
                break
        if init_skip is not None:
            outcome = {"rank": spec.rank, "status": "skipped", "reason": init_skip, "texts": []}
        else:
            outcome = run_one(cls, task, spec)
            clean = clean and outcome["status"] != "failed"
        conn.send(outcome)
        task = None
        if not spec.pool:
            break
    if spec.pool and clean and init_skip is None:
        try:
            cls._harness_exit_rank(spec)
        except BaseException:
            pass
    exit_now(conn, stacks, 0)


def exit_now(conn, stacks, code: int) -> None:
    # Skip interpreter teardown (torch's atexit work): the parent has the outcome.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        conn.close()
        stacks.close()
    finally:
        os._exit(code)
